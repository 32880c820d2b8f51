"""A throwaway certificate authority for the lab's HTTPS edges, driven by the ``openssl`` command.

The lab runs with the exporter's runtime dependencies only, so certificates come from the openssl
binary (present on every mainstream Linux) rather than a Python crypto package. ``openssl ca`` is used
for leaves because it takes explicit start and end dates, which is how an already *expired* certificate
is made (``x509 -days`` cannot reach into the past). Certificate validity is wall-clock time: a scenario
running at speed 50 still shows a certificate expiring in 10 real days.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

_CONFIG = """\
[req]
distinguished_name = dn
x509_extensions = v3_ca
prompt = no
[dn]
CN = Outage Lab CA
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[ca]
default_ca = lab
[lab]
database = {dir}/index.txt
new_certs_dir = {dir}/issued
serial = {dir}/serial
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
"""

_LEAF_EXT = """\
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = {sans}
"""


def available() -> bool:
    """True when the openssl command is on PATH (HTTPS edges need it)."""
    return shutil.which("openssl") is not None


class LabCA:
    """Create a CA in a private temporary directory; issue leaves for lab hostnames on demand."""

    def __init__(self, directory: Path | None = None) -> None:
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="outage-lab-ca-")
        self.dir = Path(directory or self._tmp.name)  # type: ignore[union-attr]
        (self.dir / "issued").mkdir(exist_ok=True)
        (self.dir / "index.txt").write_text("")
        (self.dir / "serial").write_text("1000\n")
        self.config = self.dir / "openssl.cnf"
        self.config.write_text(_CONFIG.format(dir=self.dir))
        self.ca_file = self.dir / "ca.pem"
        self._ca_key = self.dir / "ca.key"
        self.key_file = self.dir / "leaf.key"
        self._run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                  "-keyout", self._ca_key, "-out", self.ca_file, "-days", "3650", "-config", self.config)
        self._run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                  "-out", self.key_file)
        self._count = 0

    def issue(self, hostnames: tuple[str, ...], not_before: datetime, not_after: datetime) -> Path:
        """A leaf certificate for ``hostnames`` (first = CN) valid between the two instants."""
        self._count += 1
        stem = self.dir / f"leaf-{self._count}"
        csr, ext, cert = stem.with_suffix(".csr"), stem.with_suffix(".ext"), stem.with_suffix(".pem")
        ext.write_text(_LEAF_EXT.format(sans=", ".join(f"DNS:{h}" for h in hostnames)))
        self._run("req", "-new", "-key", self.key_file, "-subj", f"/CN={hostnames[0]}", "-out", csr)
        self._run("ca", "-batch", "-config", self.config, "-cert", self.ca_file, "-keyfile", self._ca_key,
                  "-in", csr, "-out", cert, "-notext", "-extfile", ext,
                  "-startdate", _asn1(not_before), "-enddate", _asn1(not_after))
        return cert

    def leaf(self, hostnames: tuple[str, ...], *, days_left: float | None = None,
             expired: bool = False) -> tuple[Path, Path]:
        """(certificate, key) files for a leaf that is healthy, expires in ``days_left``, or expired."""
        now = datetime.now(UTC)
        if expired:
            start, end = now - timedelta(days=90), now - timedelta(days=1)
        elif days_left is not None:
            start, end = now - timedelta(days=80), now + timedelta(days=days_left)
        else:
            start, end = now - timedelta(days=1), now + timedelta(days=90)
        return self.issue(hostnames, start, end), self.key_file

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting the lab CA (what the exporter's tls_config.ca_file amounts to)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    def _run(self, *args: str | Path) -> None:
        cmd = ["openssl", *(str(a) for a in args)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed: {done.stderr.strip()}")


def _asn1(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y%m%d%H%M%SZ")
