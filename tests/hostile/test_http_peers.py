"""The http prober against hostile peers: every case ends on time, with a bounded reason, leaking nothing.

The outcomes asserted here are the ones documented in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

import pytest

from exporter.config.model import MAX_BODY_BYTES, TLSConfig
from exporter.probers import http
from exporter.probers import result as r
from tests.helpers.leaks import Snapshot, no_leaks, settled, snapshot
from tests.hostile.support import FAST, QUICK, STALL, assert_outcome, deadline, probe_hostile
from tests.servers.hostile import start_hostile
from tests.servers.http import http_check, start_http

SMALL_PEAK = 8 * 1024 * 1024  # traced peak allowed when the body is only counted, never kept


@pytest.fixture(autouse=True)
async def _close_shared_session():
    yield
    await http.close()


@dataclass(frozen=True)
class Case:
    behaviour: str
    reason: str
    stalls: bool  # True: ends at the deadline; False: must fail fast
    options: dict[str, object] = field(default_factory=dict)
    http: dict[str, object] = field(default_factory=dict)
    scheme: str = "http"
    memory: bool = False


CASES = {
    "never answers": Case("never_answer", r.TIMEOUT, stalls=True),
    "slowloris headers": Case("slowloris", r.TIMEOUT, stalls=True, options={"drip": 0.05}),
    "100 Continue forever": Case("continue_forever", r.TIMEOUT, stalls=True),
    "endless body": Case("endless_body", r.HTTP_BODY_TOO_LARGE, stalls=False, memory=True),
    "endless chunked body": Case("endless_body", r.HTTP_BODY_TOO_LARGE, stalls=False, memory=True,
                                 options={"chunked": True}),
    "endless body, body_size_limit": Case("endless_body", r.HTTP_BODY_TOO_LARGE, stalls=False, memory=True,
                                          http={"body_size_limit": 100_000}),
    "gzip bomb": Case("gzip_bomb", r.HTTP_BODY_TOO_LARGE, stalls=False, memory=True),
    "gigantic header line": Case("giant_header", r.HTTP_PROTOCOL, stalls=False, memory=True),
    "endless header lines": Case("many_headers", r.HTTP_PROTOCOL, stalls=False, memory=True),
    "redirect loop": Case("redirect_loop", r.HTTP_TOO_MANY_REDIRECTS, stalls=False),
    "chunk size overflow": Case("bad_chunk_size", r.HTTP_PROTOCOL, stalls=False),
    "closes without answering": Case("half_open", r.CONN_RESET, stalls=False),
    "TLS handshake stalls": Case("tls_stall", r.TLS_HANDSHAKE, stalls=True, scheme="https"),
    "TLS to a peer that never speaks": Case("never_answer", r.TLS_HANDSHAKE, stalls=True, scheme="https"),
    "TLS reset mid-handshake": Case("reset", r.TLS_HANDSHAKE, stalls=False, scheme="https"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
async def test_hostile_http_peer(case: Case) -> None:
    peer = await start_hostile(case.behaviour, **case.options)
    try:
        check = http_check(peer.url("/", scheme=case.scheme), **case.http)
        out = await probe_hostile(http.probe, check, timeout=deadline(case.stalls), measure_memory=case.memory)
    finally:
        await peer.stop()
    assert_outcome(out, case.reason, stalls=case.stalls, peak_limit=SMALL_PEAK if case.memory else None)


async def test_endless_body_kept_for_a_regex_stops_at_the_cap() -> None:
    """A body regex makes the prober keep the body: memory stays within the safety cap plus a margin."""
    peer = await start_hostile("endless_body")
    try:
        check = http_check(peer.url(), fail_if_body_matches_regexp=(re.compile(b"never-there"),))
        out = await probe_hostile(http.probe, check, timeout=FAST, measure_memory=True)
    finally:
        await peer.stop()
    assert out.reason == r.HTTP_BODY_TOO_LARGE
    assert out.result.details[r.D_HTTP_BODY_BYTES] == MAX_BODY_BYTES + 1  # one byte past the cap, no more
    assert out.peak_bytes < MAX_BODY_BYTES + SMALL_PEAK, f"peak {out.peak_bytes} bytes"


@pytest.mark.parametrize(("where", "reason", "stalls"), [
    ("https-on-plain", r.TLS_HANDSHAKE, False),  # another scheme, same port: the peer answers TLS with HTTP
    ("https-on-silent", r.TLS_HANDSHAKE, True),  # another scheme and port, where nobody speaks
    ("http-on-silent", r.TIMEOUT, True),  # another port that accepts and never answers
    ("closed-port", r.CONN_REFUSED, False),
    ("ftp", r.HTTP_STATUS, False),  # not followed: the 302 itself is judged (not 2xx)
])
async def test_redirect_elsewhere(where: str, reason: str, stalls: bool) -> None:
    silent = await start_hostile("never_answer")
    plain = await start_http()
    locations = {
        "https-on-plain": f"https://127.0.0.1:{plain.port}/",
        "https-on-silent": silent.url("/", scheme="https"),
        "http-on-silent": silent.url("/"),
        "closed-port": "http://127.0.0.1:1/",
        "ftp": "ftp://127.0.0.1/file",
    }
    redirector = await start_hostile("redirect", location=locations[where])
    try:
        out = await probe_hostile(http.probe, http_check(redirector.url()), timeout=deadline(stalls))
    finally:
        for peer in (redirector, silent):
            await peer.stop()
        await plain.stop()
    assert_outcome(out, reason, stalls=stalls)
    assert out.result.details[r.D_HTTP_REDIRECTS] == (0 if where == "ftp" else 1)


@pytest.mark.parametrize(("behaviour", "scheme", "reason", "stalls"), [
    ("never_answer", "http", r.TIMEOUT, True),
    ("never_answer", "https", r.CONN_TIMEOUT, True),  # the CONNECT tunnel never opens
    ("slowloris", "https", r.CONN_TIMEOUT, True),
    ("giant_header", "http", r.HTTP_PROTOCOL, False),
    ("giant_header", "https", r.HTTP_PROTOCOL, False),
    ("endless_body", "http", r.HTTP_BODY_TOO_LARGE, False),
    ("endless_body", "https", r.TLS_HANDSHAKE, False),  # "200" to CONNECT, then bytes that are not TLS
    ("half_open", "https", r.CONN_RESET, False),
])
async def test_hostile_proxy(behaviour: str, scheme: str, reason: str, stalls: bool) -> None:
    """``proxy_url`` pointing at a hostile proxy: aiohttp connects there itself, the bounds still hold."""
    proxy = await start_hostile(behaviour)
    try:
        check = http_check(f"{scheme}://127.0.0.1:9/", proxy_url=proxy.url())
        out = await probe_hostile(http.probe, check, timeout=deadline(stalls), measure_memory=True)
    finally:
        await proxy.stop()
    assert_outcome(out, reason, stalls=stalls, peak_limit=SMALL_PEAK)


async def test_wrong_hostname_certificate(pki) -> None:
    site = await start_http(ssl_context=pki.server_context(pki.wrong_host))
    try:
        check = http_check(site.url("/"), tls_config=TLSConfig(ca_file=pki.ca_file))
        out = await probe_hostile(http.probe, check, timeout=FAST)
    finally:
        await site.stop()
    assert out.reason == r.TLS_CERT_INVALID and out.elapsed < QUICK
    assert any("certificate" in line.lower() for line in out.result.log)


async def test_failed_tls_probe_drops_its_socket_at_once(pki) -> None:
    """After TLS is up the peer stops reading: a graceful close would wait for a close_notify that never
    comes (SSL_SHUTDOWN_TIMEOUT); a failed probe aborts instead, so our socket is gone by the deadline."""
    peer = await start_hostile("tls_then_mute", tls_context=pki.server_context(pki.valid), mute_for=3.0)
    try:
        before = snapshot()
        loop = asyncio.get_running_loop()
        check = http_check(peer.url("/", scheme="https"), tls_config=TLSConfig(ca_file=pki.ca_file))
        res = await http.probe(check, deadline=loop.time() + STALL)
        # the peer's own end of the connection is still open (muted); ours must already be closed
        now = await settled(Snapshot(fds=before.fds + 1, tasks=before.tasks + 1), within=0.2)
    finally:
        await peer.stop()
    assert res.reason == r.TIMEOUT and any("TLS" in line for line in res.log), res.log
    assert now.fds <= before.fds + 1, f"our socket outlived the failed probe: {before} -> {now}"


async def test_many_hostile_probes_at_once_leak_nothing() -> None:
    """Fifty concurrent probes against a mix of hostile peers: all end by the deadline, every fd returns."""
    peers = [await start_hostile(b) for b in ("never_answer", "slowloris", "endless_body", "giant_header")]
    loop = asyncio.get_running_loop()
    try:
        async with no_leaks(within=3.0):
            deadline = loop.time() + STALL
            results = await asyncio.gather(*(http.probe(http_check(peers[i % 4].url(f"/{i}")), deadline=deadline)
                                             for i in range(50)))
            assert loop.time() <= deadline + 0.5
    finally:
        for peer in peers:
            await peer.stop()
    reasons = {res.reason for res in results}
    assert reasons == {r.TIMEOUT, r.HTTP_BODY_TOO_LARGE, r.HTTP_PROTOCOL}
