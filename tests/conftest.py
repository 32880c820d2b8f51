"""Shared fixtures. Every peer a test talks to is started here or in tests/servers/, on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.config import reading
from exporter.config.model import Resolver
from tests.servers.dns import start_dns
from tests.servers.http import start_http

RECORDS = {
    "www.test.": {"A": ["127.0.0.1"], "AAAA": ["::1"]},
    "v6only.test.": {"AAAA": ["::1"]},
    "nodata.test.": {"TXT": ["\"hello\""]},
    "big.test.": {"TXT": [f'"{"x" * 200}"' for _ in range(20)]},
    "test.": {"SOA": ["ns1.test. admin.test. 2021100401 3600 600 86400 60"], "NS": ["ns1.test."]},
}
MODES = {
    "servfail.test.": "servfail",
    "refused.test.": "refused",
    "nx.test.": "nxdomain",
    "drop.test.": "drop",
    "slow.test.": "delay:0.3",
    "big.test.": "truncate",
    "noaa.test.": "noaa",
    "garbage.test.": "malformed",
}


@pytest.fixture
async def dns_server():
    """A local DNS server with RECORDS and MODES (see tests/servers/dns.py)."""
    server = await start_dns(RECORDS, MODES)
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def resolver(dns_server) -> Resolver:
    return Resolver(name=dns_server.address, host=dns_server.host, port=dns_server.port)


@pytest.fixture
async def site():
    """A local HTTP test site (tests/servers/http.py); files may override it with their own."""
    server = await start_http()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(params=sorted(reading.YAML_LOADERS))
def yaml_loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a config test with each YAML parser available (libyaml and pure Python): same results.

    Config test files apply it to every test with ``pytestmark = pytest.mark.usefixtures("yaml_loader")``.
    """
    monkeypatch.setattr(reading, "YAML_LOADER", reading.YAML_LOADERS[request.param])
    return request.param


@pytest.fixture
def resolv_conf(tmp_path: Path) -> str:
    """A resolv.conf with one loopback nameserver, so no config test depends on the host's."""
    path = tmp_path / "resolv.conf"
    path.write_text("# written by a test\nsearch example.internal\nnameserver 127.0.0.53\noptions edns0\n")
    return str(path)


@pytest.fixture
async def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Non-loopback addresses the event loop was asked to connect to; each attempt fails instead."""
    from tests.helpers.probeweb import loopback_only

    return loopback_only(monkeypatch)
