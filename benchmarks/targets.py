"""Probe targets faster than any prober: nginx for HTTP, Knot DNS (or NSD) for DNS, on 127.0.0.1.

Each runs in the foreground with its own config, prefix and run directories under the harness's temp
directory, so nothing on the host is read or changed. :func:`start_targets` returns only once both answer
a real request (an HTTP 200, an authoritative DNS answer), so no measurement starts against a dead target.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode

from benchmarks.procs import Managed, free_port, http_ok, pinned

ZONE = "bench.test"
QUERY_NAME = f"www.{ZONE}"
ZONE_FILE = f"""\
$ORIGIN {ZONE}.
$TTL 300
@    IN SOA ns1.{ZONE}. admin.{ZONE}. 2024010101 3600 600 86400 60
@    IN NS  ns1.{ZONE}.
ns1  IN A   127.0.0.1
www  IN A   127.0.0.1
"""
NGINX_BODY = "ok\n"
START_TIMEOUT = 20.0


@dataclass
class Targets:
    """The running targets: ``http_url`` answers 200, ``dns_server`` (``127.0.0.1:port``) serves ZONE."""

    http_url: str
    dns_server: str
    dns_software: str
    procs: list[Managed]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def find(*names: str) -> str | None:
    """First of ``names`` on PATH or in the sbin directories (not always on a user's PATH)."""
    for name in names:
        for candidate in (name, f"/usr/sbin/{name}", f"/sbin/{name}"):
            path = shutil.which(candidate)
            if path:
                return path
    return None


def start_targets(workdir: Path, cpus: Sequence[int], *, dns_software: str = "auto") -> Targets:
    """nginx and an authoritative DNS server (``knot``, ``nsd`` or ``auto``: knot if installed) on loopback,
    pinned to ``cpus``, checked to answer."""
    procs: list[Managed] = []
    try:
        http_url = _start_nginx(workdir / "nginx", cpus, procs)
        dns_server, software = _start_dns(workdir / "dns", cpus, procs, dns_software)
    except BaseException:
        for proc in reversed(procs):
            proc.stop()
        raise
    return Targets(http_url, dns_server, software, procs)


# --- nginx ------------------------------------------------------------------------------------------------
def nginx_config(prefix: Path, port: int) -> str:
    return textwrap.dedent(f"""\
        worker_processes 1;
        pid {prefix}/nginx.pid;
        error_log {prefix}/error.log warn;
        events {{ worker_connections 4096; }}
        http {{
            access_log off;
            client_body_temp_path {prefix}/client_body;
            proxy_temp_path {prefix}/proxy;
            fastcgi_temp_path {prefix}/fastcgi;
            uwsgi_temp_path {prefix}/uwsgi;
            scgi_temp_path {prefix}/scgi;
            server {{
                listen 127.0.0.1:{port} backlog=4096;
                location / {{ default_type text/plain; return 200 "{NGINX_BODY.strip()}\\n"; }}
            }}
        }}
        """)


def _start_nginx(prefix: Path, cpus: Sequence[int], procs: list[Managed]) -> str:
    binary = find("nginx")
    if binary is None:
        raise RuntimeError("nginx not found (Debian: apt-get install nginx)")
    prefix.mkdir(parents=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(prefix, port))
    proc = Managed("nginx", pinned([binary, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"], cpus),
                   log=prefix / "stderr.log")
    procs.append(proc)
    url = f"http://127.0.0.1:{port}/"
    proc.wait_until(lambda: http_ok(url), timeout=START_TIMEOUT, what="answering HTTP 200")
    return url


# --- DNS: Knot, else NSD ------------------------------------------------------------------------------------
def knot_config(root: Path, port: int) -> str:
    return textwrap.dedent(f"""\
        server:
            rundir: "{root}/run"
            listen: 127.0.0.1@{port}
            udp-workers: 1
            tcp-workers: 1
            background-workers: 1
        database:
            storage: "{root}/db"
        log:
          - target: stderr
            any: warning
        template:
          - id: default
            storage: "{root}/zones"
            semantic-checks: off
        zone:
          - domain: {ZONE}
            file: "{ZONE}.zone"
        """)


def nsd_config(root: Path, port: int) -> str:
    return textwrap.dedent(f"""\
        server:
            ip-address: 127.0.0.1@{port}
            server-count: 1
            username: ""
            chroot: ""
            zonesdir: "{root}/zones"
            database: ""
            pidfile: "{root}/run/nsd.pid"
            xfrdfile: "{root}/run/xfrd.state"
            zonelistfile: "{root}/run/zone.list"
            logfile: "{root}/nsd.log"
            verbosity: 0
        remote-control:
            control-enable: no
        zone:
            name: {ZONE}
            zonefile: "{ZONE}.zone"
        """)


def _start_dns(root: Path, cpus: Sequence[int], procs: list[Managed], want: str) -> tuple[str, str]:
    for sub in ("run", "db", "zones"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "zones" / f"{ZONE}.zone").write_text(ZONE_FILE)
    port = free_port(udp_too=True)
    knotd = find("knotd") if want in ("auto", "knot") else None
    nsd = find("nsd") if want in ("auto", "nsd") else None
    if knotd is not None:
        conf = root / "knot.conf"
        conf.write_text(knot_config(root, port))
        cmd, software = [knotd, "-c", str(conf)], "knot"
    elif nsd is not None:
        conf = root / "nsd.conf"
        conf.write_text(nsd_config(root, port))
        cmd, software = [nsd, "-d", "-c", str(conf)], "nsd"
    else:
        raise RuntimeError(f"no DNS server found for {want!r} (Debian: apt-get install knot, or nsd)")
    proc = Managed(software, pinned(cmd, cpus), log=root / "stderr.log")
    procs.append(proc)
    server = f"127.0.0.1:{port}"
    proc.wait_until(lambda: dns_answers(server), timeout=START_TIMEOUT, what=f"answering {QUERY_NAME} A")
    return server, software


def dns_answers(server: str, name: str = QUERY_NAME) -> bool:
    """Whether ``server`` answers ``name`` A authoritatively with NOERROR and an address."""
    host, port = server.rsplit(":", 1)
    try:
        reply = dns.query.udp(dns.message.make_query(name, "A"), host, port=int(port), timeout=0.5)
    except (OSError, dns.exception.DNSException):
        return False
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer) and bool(reply.flags & dns.flags.AA)
