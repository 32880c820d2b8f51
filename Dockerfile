# syntax=docker/dockerfile:1
#
# outage-exporter container image.
#
#   docker build -t outage-exporter:0.1.0 .
#   docker run --rm -p 19115:19115 -v "$PWD/my-config.yml:/etc/outage-exporter/config.yml:ro" \
#     outage-exporter:0.1.0 --config.file=/etc/outage-exporter/config.yml --web.listen-address=0.0.0.0:19115 \
#     --region=eu-west
#   docker run --rm -p 19115:19115 outage-exporter:0.1.0 demo --web.listen-address=0.0.0.0:19115
#
# The base image is pinned by tag and digest, so a rebuild gets the same Python and Debian packages. To move
# to a newer patch release, look its digest up (`docker buildx imagetools inspect python:3.11.X-slim-bookworm`)
# and update both; or pass another base with --build-arg PYTHON_IMAGE=... (a mirror, for instance).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:081075da77b2b55c23c088251026fb69a7b2bf92471e491ff5fd75c192fd38e5

# --- build: wheels for the project and its dependencies, installed into a virtualenv -----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY exporter ./exporter
RUN pip wheel --wheel-dir /wheels -c constraints.txt . \
 && python -m venv /opt/outage-exporter \
 && /opt/outage-exporter/bin/pip install --no-index --find-links /wheels outage-exporter

# --- runtime: the virtualenv only, no compiler, no pip cache, no source tree ------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="outage-exporter" \
      org.opencontainers.image.description="Prometheus exporter that tells you a service is down, where, and why" \
      org.opencontainers.image.source="https://github.com/outage-exporter/outage-exporter" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
ENV PATH=/opt/outage-exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed numeric user: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 outage \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin outage
COPY --from=build /opt/outage-exporter /opt/outage-exporter
# The embedded default config as a starting point; mount your own over it.
COPY exporter/config/default.yaml /etc/outage-exporter/config.yml
USER 10001:10001
EXPOSE 19115
# No curl in the slim image: the venv's Python asks /-/healthy. HEALTHCHECK_URL follows a changed port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; url = os.environ.get('HEALTHCHECK_URL', 'http://127.0.0.1:19115/-/healthy'); sys.exit(0 if urllib.request.urlopen(url, timeout=4).status == 200 else 1)"]
ENTRYPOINT ["outage-exporter"]
CMD ["--config.file=/etc/outage-exporter/config.yml", "--web.listen-address=0.0.0.0:19115"]
