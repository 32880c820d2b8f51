"""The tcp prober against real local peers, plus the shared pieces it owns (Attempt plumbing, template
expansion, target parsing) and the TLS helper both connection probers use."""

from __future__ import annotations

import asyncio
import datetime
import os
import re
import ssl
import time
from pathlib import Path

import pytest

from exporter.config.model import QueryResponse, TLSConfig
from exporter.probers import result as r
from exporter.probers import tcp, tlsutil
from exporter.probers.errors import reason_for_exception
from exporter.probers.result import ProbeResult
from tests.servers.http import closed_port, full_backlog_listener, make_pki, start_raw, tcp_check

SLACK = 0.15


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


async def run(check, timeout: float = 2.0) -> ProbeResult:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    result = await tcp.probe(check, deadline=deadline)
    assert loop.time() <= deadline + SLACK, "probe overran its deadline"
    assert result.success == (result.reason is None)
    return result


def qr(expect: bytes | None = None, send: str | None = None, starttls: bool = False) -> QueryResponse:
    return QueryResponse(expect=re.compile(expect) if expect is not None else None, send=send,
                         starttls=starttls)


@pytest.fixture
async def banner(pki):
    server = await start_raw("banner", tls_context=pki.server_context(pki.valid))
    yield server
    await server.stop()


# --- connecting --------------------------------------------------------------------------------------------
async def test_connect_only():
    raw = await start_raw("silent")
    try:
        res = await run(tcp_check(raw.address))
    finally:
        await raw.stop()
    assert res.success and set(res.phases) == {r.PHASE_CONNECT}
    assert res.details[r.D_TLS] == 0 and res.details[r.D_IP_PROTOCOL] == 4
    assert res.details[r.D_ADDRESS] == "127.0.0.1" and r.D_FAILED_DUE_TO_REGEX not in res.details


async def test_name_is_resolved_through_the_check_resolvers(resolver):
    raw = await start_raw("silent")
    try:
        res = await run(tcp_check(f"www.test:{raw.port}", resolvers=(resolver,)))
    finally:
        await raw.stop()
    assert res.success and set(res.phases) == {r.PHASE_RESOLVE, r.PHASE_CONNECT}
    assert any("resolved www.test" in line for line in res.log)


async def test_ipv6_literal_target():
    try:
        raw = await start_raw("silent", host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        res = await run(tcp_check(raw.address))
    finally:
        await raw.stop()
    assert res.success and res.details[r.D_IP_PROTOCOL] == 6


async def test_source_ip_address_is_bound():
    raw = await start_raw("silent")
    try:
        res = await run(tcp_check(raw.address, source_ip_address="127.0.0.2"))
        await asyncio.sleep(0.01)
    finally:
        await raw.stop()
    assert res.success and raw.peers[0][0] == "127.0.0.2"


@pytest.mark.parametrize(("host", "reason"), [("servfail.test", r.DNS_SERVFAIL), ("drop.test", r.DNS_TIMEOUT),
                                              ("refused.test", r.DNS_REFUSED)])
async def test_dns_failure_reasons(resolver, host, reason):
    res = await run(tcp_check(f"{host}:25", resolvers=(resolver,)), timeout=0.4)
    assert res.reason == reason and set(res.phases) == {r.PHASE_RESOLVE}


async def test_conn_refused():
    sock = closed_port()
    try:
        res = await run(tcp_check(f"127.0.0.1:{sock.getsockname()[1]}"))
    finally:
        sock.close()
    assert res.reason == r.CONN_REFUSED and set(res.phases) == {r.PHASE_CONNECT}


async def test_conn_timeout_against_a_full_accept_queue():
    backlog = full_backlog_listener()
    if backlog is None:
        pytest.skip("kernel answers SYNs to a full accept queue here")
    try:
        res = await run(tcp_check(f"127.0.0.1:{backlog.port}"), timeout=0.3)
    finally:
        backlog.close()
    assert res.reason == r.CONN_TIMEOUT and res.phases[r.PHASE_CONNECT] >= 0.25


async def test_conn_reset_while_waiting_for_a_line():
    raw = await start_raw("reset")
    try:
        res = await run(tcp_check(raw.address, query_response=(qr(rb"^220"),)))
    finally:
        await raw.stop()
    assert res.reason == r.CONN_RESET


@pytest.mark.parametrize("target", ["no-port", "127.0.0.1:99999", "::1:25", "127.0.0.1:"])
async def test_bad_target_is_conn_error(target):
    res = await run(tcp_check(target))
    assert res.reason == r.CONN_ERROR and res.phases == {}


async def test_unusable_source_address_is_conn_error():
    # 192.0.2.1 (TEST-NET-1) is not assigned here, so bind() fails locally before any packet is sent.
    res = await run(tcp_check("127.0.0.1:9", source_ip_address="192.0.2.1"))
    assert res.reason == r.CONN_ERROR


# --- query_response ----------------------------------------------------------------------------------------
async def test_banner_dialogue(banner):
    steps = (qr(rb"^220 ", "EHLO prober"), qr(rb"^250 STARTTLS$", "QUIT"), qr(rb"^221 "))
    res = await run(tcp_check(banner.address, query_response=steps))
    assert res.success and res.details[r.D_FAILED_DUE_TO_REGEX] == 0
    assert banner.seen == [b"EHLO prober", b"QUIT"]
    assert any("'250-mail.test'" in line for line in res.log)  # lines read while waiting are logged


async def test_send_expands_groups_from_the_expect_match(banner):
    steps = (qr(rb"id=(?P<id>\w+)", "ECHO ${1} $id $$ ${missing}"), qr(rb"^250 echo abc123 abc123 \$$"))
    res = await run(tcp_check(banner.address, query_response=steps))
    assert res.success
    assert banner.seen == [b"ECHO abc123 abc123 $"]


async def test_eof_before_match_is_expect_mismatch(banner):
    steps = (qr(rb"^220", "QUIT"), qr(rb"^554 "))
    res = await run(tcp_check(banner.address, query_response=steps))
    assert res.reason == r.TCP_EXPECT_MISMATCH and res.details[r.D_FAILED_DUE_TO_REGEX] == 1
    assert any("connection closed before a line matched" in line for line in res.log)


async def test_no_matching_line_before_the_deadline_is_timeout(banner):
    res = await run(tcp_check(banner.address, query_response=(qr(rb"^554 "),)), timeout=0.3)
    assert res.reason == r.TIMEOUT and set(res.phases) == {r.PHASE_CONNECT}


async def test_overlong_line_is_expect_mismatch():
    raw = await start_raw("long_line")
    try:
        res = await run(tcp_check(raw.address, query_response=(qr(rb"^220 "),)))
    finally:
        await raw.stop()
    assert res.reason == r.TCP_EXPECT_MISMATCH


async def test_starttls(banner, pki):
    steps = (qr(rb"^220 ", "EHLO prober"), qr(rb"^250 STARTTLS", "STARTTLS"), qr(rb"^220 ready", starttls=True),
             qr(None, "QUIT"), qr(rb"^221 bye"))
    res = await run(tcp_check(banner.address, query_response=steps, tls_config=TLSConfig(ca_file=pki.ca_file),
                              hostname="www.test"))
    assert res.success, res.log
    assert set(res.phases) == {r.PHASE_CONNECT, r.PHASE_TLS}
    assert res.details[r.D_TLS] == 1 and res.details[r.D_TLS_VERSION] == "TLS 1.3"
    assert res.details[r.D_CERT_EXPIRY] > time.time()


async def test_starttls_with_an_untrusted_certificate(banner):
    steps = (qr(rb"^220 ", "STARTTLS"), qr(rb"^220 ready", starttls=True))
    res = await run(tcp_check(banner.address, query_response=steps))
    assert res.reason == r.TLS_CERT_INVALID and r.PHASE_TLS in res.phases


# --- TLS from the first byte -------------------------------------------------------------------------------
async def _tls_probe(pki, leaf, tls_config, **kw) -> ProbeResult:
    raw = await start_raw("tls_banner", tls_context=pki.server_context(leaf))
    try:
        steps = (qr(rb"^220 ", "QUIT"), qr(rb"^221 "))
        return await run(tcp_check(raw.address, tls=True, tls_config=tls_config, query_response=steps, **kw))
    finally:
        await raw.stop()


async def test_tls(pki):
    res = await _tls_probe(pki, pki.valid, TLSConfig(ca_file=pki.ca_file))
    assert res.success and set(res.phases) == {r.PHASE_CONNECT, r.PHASE_TLS}
    assert res.details[r.D_TLS] == 1 and res.details[r.D_TLS_VERSION] == "TLS 1.3"


async def test_tls_min_version_is_enforced(pki):
    raw_ctx = pki.server_context(pki.valid)
    raw_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    raw = await start_raw("tls_banner", tls_context=raw_ctx)
    try:
        tls12 = await run(tcp_check(raw.address, tls=True, tls_config=TLSConfig(ca_file=pki.ca_file)))
        tls13 = await run(tcp_check(raw.address, tls=True,
                                    tls_config=TLSConfig(ca_file=pki.ca_file, min_version="TLS13")))
    finally:
        await raw.stop()
    assert tls12.success and tls12.details[r.D_TLS_VERSION] == "TLS 1.2"
    assert tls13.reason == r.TLS_HANDSHAKE


async def test_tls_expired_and_skip_verify(pki):
    res = await _tls_probe(pki, pki.expired, TLSConfig(ca_file=pki.ca_file))
    assert res.reason == r.TLS_CERT_EXPIRED
    res = await _tls_probe(pki, pki.expired, TLSConfig(insecure_skip_verify=True))
    assert res.success and res.details[r.D_CERT_EXPIRY] < time.time()


async def test_tls_wrong_name_and_overrides(pki):
    res = await _tls_probe(pki, pki.wrong_host, TLSConfig(ca_file=pki.ca_file))
    assert res.reason == r.TLS_CERT_INVALID
    assert (await _tls_probe(pki, pki.wrong_host, TLSConfig(ca_file=pki.ca_file), hostname="wrong.test")).success
    assert (await _tls_probe(pki, pki.wrong_host, TLSConfig(ca_file=pki.ca_file, server_name="wrong.test"))).success


async def test_tls_never_completes_is_tls_handshake():
    raw = await start_raw("silent")
    try:
        res = await run(tcp_check(raw.address, tls=True), timeout=0.3)
    finally:
        await raw.stop()
    assert res.reason == r.TLS_HANDSHAKE and res.phases[r.PHASE_TLS] >= 0.2


async def test_tls_reset_mid_handshake_is_tls_handshake():
    raw = await start_raw("reset")
    try:
        res = await run(tcp_check(raw.address, tls=True))
    finally:
        await raw.stop()
    assert res.reason == r.TLS_HANDSHAKE


# --- contract ----------------------------------------------------------------------------------------------
async def test_cancellation_propagates(banner):
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(tcp.probe(tcp_check(banner.address, query_response=(qr(rb"^554"),)),
                                           deadline=loop.time() + 5))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_bug_is_internal_not_an_exception(monkeypatch):
    async def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(tcp, "_dialogue", broken)
    raw = await start_raw("silent")
    try:
        res = await run(tcp_check(raw.address))
    finally:
        await raw.stop()
    assert res.reason == r.INTERNAL and any("RuntimeError: boom" in line for line in res.log)


# --- helpers -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("template", "expected"), [
    ("plain", b"plain"),
    ("${1}-$1", b"a-a"),
    ("${word}/$word", b"bc/bc"),
    ("$$1", b"$1"),
    ("$1x", b""),  # like Go: the longest name, "1x", which is no group
    ("${9} ${nope}", b" "),
    ("cost $ ${ ok", b"cost $ ${ ok"),
    ("caf\u00e9 $1", "caf\u00e9 a".encode()),
])
def test_expand_follows_go_template_rules(template, expected):
    match = re.search(rb"(a)(?P<word>bc)", b"xabc")
    assert tcp.expand(template, match) == expected


def test_expand_keeps_raw_bytes_of_groups():
    match = re.search(rb"id=(\S+)", b"id=\xff\xfe")
    assert tcp.expand("ID $1", match) == b"ID \xff\xfe"


@pytest.mark.parametrize(("target", "expected"), [
    ("www.test:25", ("www.test", 25)),
    ("[::1]:465", ("::1", 465)),
    ("127.0.0.1:1", ("127.0.0.1", 1)),
])
def test_split_host_port(target, expected):
    assert tcp.split_host_port(target) == expected


def test_timeouts_map_by_phase():
    assert reason_for_exception(TimeoutError(), phase=r.PHASE_CONNECT) == r.CONN_TIMEOUT
    assert reason_for_exception(TimeoutError(), phase=r.PHASE_TLS) == r.TLS_HANDSHAKE
    assert reason_for_exception(TimeoutError(), phase=r.PHASE_PROCESSING) == r.TIMEOUT
    assert reason_for_exception(TimeoutError(), phase="query_response") == r.TIMEOUT
    assert reason_for_exception(TimeoutError()) == r.CONN_TIMEOUT  # unchanged default
    assert reason_for_exception(ConnectionResetError(), phase=r.PHASE_TLS) == r.TLS_HANDSHAKE
    assert reason_for_exception(ConnectionResetError(), phase=r.PHASE_PROCESSING) == r.CONN_RESET


def test_cert_not_after_matches_the_certificate(pki):
    for leaf in (pki.valid, pki.expired):
        der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
        decoded = ssl._ssl._test_decode_cert(_write(leaf))  # CPython's own parser, as a cross-check
        expected = ssl.cert_time_to_seconds(decoded["notAfter"])
        assert tlsutil.cert_not_after(der) == expected


def _write(leaf) -> str:
    import tempfile

    fd, path = tempfile.mkstemp(suffix=".pem")
    os.close(fd)
    leaf.cert_chain_pems[0].write_to_path(path)
    return path


def test_cert_not_after_handles_both_time_forms_and_garbage():
    import trustme

    ca = trustme.CA()
    for year in (2049, 2051):  # UTCTime up to 2049, GeneralizedTime from 2050
        when = datetime.datetime(year, 6, 1, 12, 30, 15)
        leaf = ca.issue_cert("x.test", not_after=when)
        der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
        assert tlsutil.cert_not_after(der) == when.replace(tzinfo=datetime.UTC).timestamp()
    assert tlsutil.cert_not_after(b"") is None
    assert tlsutil.cert_not_after(b"\x30\x82\xff\xff") is None


def test_contexts_are_cached_until_a_file_changes(pki, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_bytes(Path(pki.ca_file).read_bytes())
    cfg = TLSConfig(ca_file=str(ca))
    first = tlsutil.client_context(cfg)
    assert tlsutil.client_context(cfg) is first
    assert tlsutil.client_context(TLSConfig()) is tlsutil.client_context(TLSConfig())
    assert tlsutil.client_context(cfg, alpn=("http/1.1",)) is not first
    stat = os.stat(ca)
    os.utime(ca, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a rotated CA file
    assert tlsutil.client_context(cfg) is not first


async def test_peer_chain_includes_intermediates(pki):
    intermediate = pki.ca.create_child_ca()
    leaf = intermediate.issue_cert("www.test")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(server_ctx)
    raw = await start_raw("tls_banner", tls_context=server_ctx)
    try:
        ctx = tlsutil.client_context(TLSConfig(ca_file=pki.ca_file))
        _, writer = await asyncio.open_connection(raw.host, raw.port, ssl=ctx, server_hostname="www.test")
        chain = tlsutil.peer_chain(writer.get_extra_info("ssl_object"))
        info = tlsutil.tls_info(writer.get_extra_info("ssl_object"))
        writer.transport.abort()
    finally:
        await raw.stop()
    assert len(chain) == 2
    assert info.cert_expiry == min(tlsutil.cert_not_after(der) for der in chain)


def test_insecure_context_does_not_verify():
    ctx = tlsutil.client_context(TLSConfig(insecure_skip_verify=True))
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
