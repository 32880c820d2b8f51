"""In-process /probe: a started Runtime behind the aiohttp app, the refusal counter, policy configs, and a
guard that fails any connect to a non-loopback address instead of sending a packet."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from exporter.runtime import Runtime
from exporter.web.app import make_app
from tests.helpers.text import sample, write
from tests.servers.dns import start_dns

# Names a network allow list judges by the address they resolve to: one inside 127.0.0.1/32, one outside.
INSIDE_OUTSIDE = {"inside.test.": {"A": ["127.0.0.1"]}, "outside.test.": {"A": ["127.0.0.2"]}}


@asynccontextmanager
async def serve(config: Path, **app_kw: object) -> AsyncIterator[TestClient]:
    runtime = Runtime(str(config))
    await runtime.start()
    client = TestClient(TestServer(make_app(runtime, **app_kw)))  # type: ignore[arg-type]
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await runtime.stop()


async def refused(client: TestClient, reason: str) -> float | None:
    resp = await client.get("/metrics")
    return sample(await resp.text(), "outage_exporter_probe_requests_refused_total", reason=reason)


def policy_config(tmp_path: Path, probe: str) -> Path:
    """Two modules, one idle region, and ``probe`` (YAML, any indentation) as the probe section."""
    body = textwrap.indent(textwrap.dedent(probe).strip(), "  ")
    path = tmp_path / "c.yml"
    path.write_text("modules:\n  http_2xx: {prober: http, timeout: 3s}\n  tcp_connect: {prober: tcp, timeout: 3s}\n"
                    'regions: [{name: lab, resolvers: ["127.0.0.1:1"]}]\n'
                    f"probe:\n{body}\n")
    return path


@asynccontextmanager
async def serve_network_allow_list(tmp_path: Path) -> AsyncIterator[TestClient]:
    """/probe where http_2xx may reach 127.0.0.1/32 only, names resolved by a local server (INSIDE_OUTSIDE)."""
    dns = await start_dns(INSIDE_OUTSIDE)
    try:
        config = write(tmp_path / "c.yml", f"""
            modules: {{http_2xx: {{prober: http, timeout: 3s}}}}
            regions: [{{name: lab, resolvers: ["{dns.address}"]}}]
            probe: {{allow: {{http_2xx: ["127.0.0.1/32"]}}}}
        """)
        async with serve(config) as client:
            yield client
    finally:
        await dns.stop()


def loopback_only(monkeypatch: pytest.MonkeyPatch, loop: asyncio.AbstractEventLoop | None = None) -> list[str]:
    """Make every socket connect of the (running) loop and every UDP ``sendto`` to a non-loopback address
    fail before a packet leaves, recording the address."""
    seen: list[str] = []
    loop_cls = type(loop or asyncio.get_running_loop())
    original = loop_cls.sock_connect
    original_sendto = socket.socket.sendto

    def refuse(address: tuple) -> None:  # type: ignore[type-arg]
        if not ipaddress.ip_address(str(address[0]).split("%", 1)[0]).is_loopback:
            seen.append(address[0])
            raise AssertionError(f"test tried to connect to {address[0]}")

    async def sock_connect(self, sock, address):  # type: ignore[no-untyped-def]
        refuse(address)
        return await original(self, sock, address)

    def sendto(self, data, *args):  # type: ignore[no-untyped-def]
        refuse(args[-1])
        return original_sendto(self, data, *args)

    monkeypatch.setattr(loop_cls, "sock_connect", sock_connect)
    monkeypatch.setattr(socket.socket, "sendto", sendto)
    return seen
