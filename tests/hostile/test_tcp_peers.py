"""The tcp prober against hostile peers: resets, half-open connections, silence, endless lines, stalled TLS.

The outcomes asserted here are the ones documented in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

import pytest

from exporter.config.model import QueryResponse, TLSConfig
from exporter.probers import result as r
from exporter.probers import tcp
from tests.helpers.leaks import no_leaks
from tests.hostile.support import FAST, QUICK, STALL, assert_outcome, deadline, probe_hostile
from tests.servers.hostile import start_hostile
from tests.servers.http import start_http, tcp_check

SMALL_PEAK = 4 * 1024 * 1024

EXPECT = (QueryResponse(expect=re.compile(rb"^220")),)
SEND_THEN_EXPECT = (QueryResponse(send="HELLO"), QueryResponse(expect=re.compile(rb"^250")))


@dataclass(frozen=True)
class Case:
    behaviour: str
    reason: str | None  # None: the probe succeeds
    stalls: bool
    tcp: dict[str, object] = field(default_factory=dict)
    memory: bool = False


CASES = {
    "reset on connect, expect": Case("reset", r.CONN_RESET, stalls=False, tcp={"query_response": EXPECT}),
    "reset on connect, send then expect": Case("reset", r.CONN_RESET, stalls=False,
                                               tcp={"query_response": SEND_THEN_EXPECT}),
    "reset on connect, tls": Case("reset", r.TLS_HANDSHAKE, stalls=False, tcp={"tls": True}),
    "half-open, expect": Case("half_open", r.TCP_EXPECT_MISMATCH, stalls=False, tcp={"query_response": EXPECT}),
    "half-open, send then expect": Case("half_open", r.TCP_EXPECT_MISMATCH, stalls=False,
                                        tcp={"query_response": SEND_THEN_EXPECT}),
    "never answers an expect": Case("mute", r.TIMEOUT, stalls=True, tcp={"query_response": EXPECT}),
    "never answers after a send": Case("mute", r.TIMEOUT, stalls=True, tcp={"query_response": SEND_THEN_EXPECT}),
    "endless line": Case("endless_line", r.TCP_EXPECT_MISMATCH, stalls=False, memory=True,
                         tcp={"query_response": EXPECT}),
    "TLS handshake stalls": Case("tls_stall", r.TLS_HANDSHAKE, stalls=True, tcp={"tls": True}),
    "TLS to a peer that never speaks": Case("mute", r.TLS_HANDSHAKE, stalls=True, tcp={"tls": True}),
    "TLS to a half-open peer": Case("half_open", r.TLS_HANDSHAKE, stalls=False, tcp={"tls": True}),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
async def test_hostile_tcp_peer(case: Case) -> None:
    peer = await start_hostile(case.behaviour)
    try:
        out = await probe_hostile(tcp.probe, tcp_check(peer.address, **case.tcp), timeout=deadline(case.stalls),
                                  measure_memory=case.memory)
    finally:
        await peer.stop()
    assert_outcome(out, case.reason, stalls=case.stalls, peak_limit=SMALL_PEAK if case.memory else None)


async def test_reset_without_a_dialogue_still_counts_as_up() -> None:
    """Like blackbox, a tcp check without query_response only asks whether the handshake completes: a
    peer that accepts and resets at once passes. docs/reliability.md says to add an ``expect``."""
    peer = await start_hostile("reset")
    try:
        out = await probe_hostile(tcp.probe, tcp_check(peer.address), timeout=FAST)
    finally:
        await peer.stop()
    assert out.result.success and out.elapsed < QUICK
    assert r.PHASE_CONNECT in out.result.phases


async def test_wrong_hostname_certificate(pki) -> None:
    site = await start_http(ssl_context=pki.server_context(pki.wrong_host))
    try:
        check = tcp_check(f"127.0.0.1:{site.port}", tls=True, tls_config=TLSConfig(ca_file=pki.ca_file))
        out = await probe_hostile(tcp.probe, check, timeout=FAST)
    finally:
        await site.stop()
    assert out.reason == r.TLS_CERT_INVALID and out.elapsed < QUICK


async def test_many_hostile_probes_at_once_leak_nothing() -> None:
    peers = [await start_hostile(b) for b in ("reset", "half_open", "mute", "endless_line")]
    loop = asyncio.get_running_loop()
    try:
        async with no_leaks(within=3.0):
            deadline = loop.time() + STALL
            results = await asyncio.gather(*(
                tcp.probe(tcp_check(peers[i % 4].address, query_response=EXPECT), deadline=deadline)
                for i in range(60)))
            assert loop.time() <= deadline + 0.5
    finally:
        for peer in peers:
            await peer.stop()
    assert {res.reason for res in results} == {r.CONN_RESET, r.TCP_EXPECT_MISMATCH, r.TIMEOUT}
