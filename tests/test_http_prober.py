"""The http prober against real local peers: every failure reason it can produce, phases, details."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import time

import pytest

from exporter.config.model import MAX_REDIRECTS, BasicAuth, HeaderMatch, TLSConfig
from exporter.probers import http
from exporter.probers import result as r
from exporter.probers.result import ProbeResult
from tests.servers.http import (
    CONTENT_BODY,
    PROXY_STATUS,
    closed_port,
    full_backlog_listener,
    http_check,
    make_pki,
    start_http,
    start_raw,
)

SLACK = 0.15  # seconds a probe may overrun its deadline (scheduling jitter on a busy 2-core machine)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(autouse=True)
async def _close_shared_session():
    yield
    await http.close()


@pytest.fixture
async def site():
    s = await start_http()
    yield s
    await s.stop()


@pytest.fixture
async def tls_site(pki):
    s = await start_http(ssl_context=pki.server_context(pki.valid))
    yield s
    await s.stop()


async def run(check, timeout: float = 2.0) -> ProbeResult:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    result = await http.probe(check, deadline=deadline)
    assert loop.time() <= deadline + SLACK, "probe overran its deadline"
    assert result.success == (result.reason is None)
    return result


def trusted(pki, **kw) -> TLSConfig:
    return TLSConfig(ca_file=pki.ca_file, **kw)


# --- success and what it reports ---------------------------------------------------------------------------
async def test_plain_200_reports_phases_and_details(site):
    res = await run(http_check(site.url("/")))
    assert res.success and res.reason is None
    assert set(res.phases) == {r.PHASE_CONNECT, r.PHASE_PROCESSING, r.PHASE_TRANSFER}  # IP literal: no resolve
    assert all(v >= 0 for v in res.phases.values())
    assert sum(res.phases.values()) <= res.duration_seconds
    d = res.details
    assert d[r.D_HTTP_STATUS] == 200 and d[r.D_HTTP_VERSION] == 1.1 and d[r.D_HTTP_REDIRECTS] == 0
    assert d[r.D_HTTP_CONTENT_LENGTH] == len("hello from the test peer") == d[r.D_HTTP_BODY_BYTES]
    assert d[r.D_TLS] == 0 and r.D_TLS_VERSION not in d and r.D_CERT_EXPIRY not in d
    assert d[r.D_IP_PROTOCOL] == 4 and d[r.D_ADDRESS] == "127.0.0.1" and d[r.D_FAILED_DUE_TO_REGEX] == 0
    assert any(f"connecting to 127.0.0.1:{site.port}" in line for line in res.log)
    assert any("received HTTP/1.1 200 OK" in line for line in res.log)
    assert site.seen[0].headers["user-agent"].startswith("outage-exporter/")


async def test_name_is_resolved_through_the_check_resolvers(site, resolver):
    res = await run(http_check(site.url("/", host="www.test"), resolvers=(resolver,)))
    assert res.success
    assert r.PHASE_RESOLVE in res.phases and r.PHASE_CONNECT in res.phases
    assert any(f"resolved www.test via {resolver.name}: 127.0.0.1" in line for line in res.log)
    assert site.seen[0].headers["host"] == f"www.test:{site.port}"


async def test_every_probe_opens_a_fresh_connection_and_keeps_no_cookies(site):
    for path in ("/set-cookie", "/", "/"):
        assert (await run(http_check(site.url(path)))).success
    ports = [seen.peer[1] for seen in site.seen]
    assert len(set(ports)) == 3
    assert all("cookie" not in seen.headers for seen in site.seen)


async def test_ip6_preference(resolver):
    try:
        s6 = await start_http(host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        res = await run(http_check(s6.url("/", host="www.test"), resolvers=(resolver,),
                                   preferred_ip_protocol="ip6"))
        assert res.success and res.details[r.D_IP_PROTOCOL] == 6 and res.details[r.D_ADDRESS] == "::1"
        literal = await run(http_check(s6.url("/")))
        assert literal.success and literal.details[r.D_IP_PROTOCOL] == 6 and r.PHASE_RESOLVE not in literal.phases
        assert s6.seen[-1].headers["host"] == f"[::1]:{s6.port}"
    finally:
        await s6.stop()


# --- DNS failures come from the shared resolver ------------------------------------------------------------
@pytest.mark.parametrize(("host", "reason"), [
    ("servfail.test", r.DNS_SERVFAIL),
    ("drop.test", r.DNS_TIMEOUT),
    ("nx.test", r.DNS_NXDOMAIN),
    ("refused.test", r.DNS_REFUSED),
    ("nodata.test", r.DNS_NO_ANSWER),
    ("garbage.test", r.DNS_MALFORMED),
])
async def test_dns_failure_reasons(resolver, host, reason):
    res = await run(http_check(f"http://{host}:8080/", resolvers=(resolver,)), timeout=0.4)
    assert not res.success and res.reason == reason
    assert set(res.phases) == {r.PHASE_RESOLVE}
    assert res.details[r.D_HTTP_STATUS] == 0


# --- connection failures -----------------------------------------------------------------------------------
async def test_conn_refused():
    sock = closed_port()
    try:
        res = await run(http_check(f"http://127.0.0.1:{sock.getsockname()[1]}/"))
    finally:
        sock.close()
    assert res.reason == r.CONN_REFUSED
    assert set(res.phases) == {r.PHASE_CONNECT}


async def test_conn_timeout_against_a_full_accept_queue():
    backlog = full_backlog_listener()
    if backlog is None:
        pytest.skip("kernel answers SYNs to a full accept queue here")
    try:
        res = await run(http_check(f"http://127.0.0.1:{backlog.port}/"), timeout=0.3)
    finally:
        backlog.close()
    assert res.reason == r.CONN_TIMEOUT
    assert set(res.phases) == {r.PHASE_CONNECT} and res.phases[r.PHASE_CONNECT] >= 0.25
    assert any("deadline reached during connect" in line for line in res.log)


async def test_conn_reset_on_accept():
    raw = await start_raw("reset")
    try:
        res = await run(http_check(f"http://{raw.address}/"))
    finally:
        await raw.stop()
    assert res.reason == r.CONN_RESET and res.details[r.D_HTTP_STATUS] == 0


async def test_truncated_body_is_a_reset():
    raw = await start_raw("truncated")
    try:
        res = await run(http_check(f"http://{raw.address}/"))
    finally:
        await raw.stop()
    assert res.reason == r.CONN_RESET
    assert res.details[r.D_HTTP_STATUS] == 200 and r.PHASE_TRANSFER in res.phases


async def test_invalid_target_is_a_conn_error():
    res = await run(http_check("ftp://127.0.0.1/"))
    assert res.reason == r.CONN_ERROR and res.phases == {}


# --- HTTP-level failures -----------------------------------------------------------------------------------
async def test_503_is_http_status(site):
    res = await run(http_check(site.url("/status/503")))
    assert res.reason == r.HTTP_STATUS and res.details[r.D_HTTP_STATUS] == 503
    assert any("status 503 not in valid codes 2xx" in line for line in res.log)
    assert r.PHASE_TRANSFER in res.phases  # the body is read even when the status is wrong


async def test_valid_status_codes_and_proxy_status_header(site):
    accept_503 = dict(valid_status_codes=(503,))
    assert (await run(http_check(site.url("/status/503"), **accept_503))).success
    edge_down = HeaderMatch(header="Proxy-Status", regexp=__import__("re").compile(PROXY_STATUS))
    res = await run(http_check(site.url("/status/503"), fail_if_header_matches=(edge_down,), **accept_503))
    assert res.reason == r.HTTP_HEADER_MISMATCH and res.details[r.D_FAILED_DUE_TO_REGEX] == 1


@pytest.mark.parametrize(("kind", "header", "pattern", "allow_missing", "ok"), [
    ("not", "X-Outage-State", "green", False, True),
    ("not", "X-Outage-State", "red", False, False),
    ("not", "X-Absent", "x", True, True),
    ("not", "X-Absent", "x", False, False),
    ("match", "X-Outage-State", "gr.en", False, False),
    ("match", "X-Outage-State", "red", False, True),
    ("match", "X-Absent", "x", True, True),
])
async def test_header_regexes(site, kind, header, pattern, allow_missing, ok):
    import re

    spec = HeaderMatch(header=header, regexp=re.compile(pattern), allow_missing=allow_missing)
    key = "fail_if_header_not_matches" if kind == "not" else "fail_if_header_matches"
    res = await run(http_check(site.url("/content"), **{key: (spec,)}))
    assert res.success is ok
    assert res.details[r.D_FAILED_DUE_TO_REGEX] == (0 if ok else 1)
    if not ok:
        assert res.reason == r.HTTP_HEADER_MISMATCH


@pytest.mark.parametrize(("key", "pattern", "ok"), [
    ("fail_if_body_matches_regexp", rb"operational", False),
    ("fail_if_body_matches_regexp", rb"outage", True),
    ("fail_if_body_not_matches_regexp", rb"all systems \w+", True),
    ("fail_if_body_not_matches_regexp", rb"degraded", False),
])
async def test_body_regexes(site, key, pattern, ok):
    import re

    res = await run(http_check(site.url("/content"), **{key: (re.compile(pattern),)}))
    assert res.success is ok
    assert res.details[r.D_FAILED_DUE_TO_REGEX] == (0 if ok else 1)
    if not ok:
        assert res.reason == r.HTTP_BODY_MISMATCH


async def test_body_size_limit_stops_reading(site):
    res = await run(http_check(site.url("/large?size=200000"), body_size_limit=1000))
    assert res.reason == r.HTTP_BODY_TOO_LARGE
    assert res.details[r.D_HTTP_BODY_BYTES] == 1001  # read at most limit + 1 bytes
    assert (await run(http_check(site.url("/large?size=1000"), body_size_limit=1000))).success


async def test_long_header_lines_are_accepted(site):
    assert (await run(http_check(site.url("/big-header")))).success


async def test_garbage_instead_of_http_is_http_protocol():
    raw = await start_raw("garbage")
    try:
        res = await run(http_check(f"http://{raw.address}/"))
    finally:
        await raw.stop()
    assert res.reason == r.HTTP_PROTOCOL and res.details[r.D_HTTP_STATUS] == 0


async def test_malformed_chunked_body_is_http_protocol():
    raw = await start_raw("bad_chunks")
    try:
        res = await run(http_check(f"http://{raw.address}/"))
    finally:
        await raw.stop()
    assert res.reason == r.HTTP_PROTOCOL


async def test_http10_reply_and_valid_http_versions():
    raw = await start_raw("http10")
    try:
        res = await run(http_check(f"http://{raw.address}/"))
        assert res.success and res.details[r.D_HTTP_VERSION] == 1.0
        assert res.details[r.D_HTTP_CONTENT_LENGTH] == -1 and res.details[r.D_HTTP_BODY_BYTES] == 12
        res = await run(http_check(f"http://{raw.address}/", valid_http_versions=("HTTP/1.1",)))
        assert res.reason == r.HTTP_VERSION
    finally:
        await raw.stop()


async def test_slow_first_byte_is_timeout_in_processing(site):
    res = await run(http_check(site.url("/slow-first-byte?delay=5")), timeout=0.3)
    assert res.reason == r.TIMEOUT
    assert set(res.phases) == {r.PHASE_CONNECT, r.PHASE_PROCESSING}
    assert res.phases[r.PHASE_PROCESSING] >= 0.2


async def test_slow_body_is_timeout_in_transfer(site):
    res = await run(http_check(site.url("/slow-body?delay=5")), timeout=0.3)
    assert res.reason == r.TIMEOUT and res.details[r.D_HTTP_STATUS] == 200
    assert r.PHASE_TRANSFER in res.phases and res.phases[r.PHASE_TRANSFER] >= 0.1
    assert any("deadline reached during transfer" in line for line in res.log)


# --- redirects ---------------------------------------------------------------------------------------------
async def test_redirect_chain_is_followed_and_counted(site):
    res = await run(http_check(site.url("/redirect/3")))
    assert res.success and res.details[r.D_HTTP_REDIRECTS] == 3 and res.details[r.D_HTTP_STATUS] == 200
    assert len({seen.peer[1] for seen in site.seen}) == 4  # a new connection per hop
    assert sum("following redirect" in line for line in res.log) == 3


async def test_redirect_limit(site):
    res = await run(http_check(site.url(f"/redirect/{MAX_REDIRECTS}")))
    assert res.success and res.details[r.D_HTTP_REDIRECTS] == MAX_REDIRECTS
    res = await run(http_check(site.url("/loop")))
    assert res.reason == r.HTTP_TOO_MANY_REDIRECTS
    # like blackbox, the redirect that was refused counts too: 10 followed + 1
    assert res.details[r.D_HTTP_REDIRECTS] == MAX_REDIRECTS + 1 and res.details[r.D_HTTP_STATUS] == 302


async def test_redirects_not_followed(site):
    res = await run(http_check(site.url("/redirect/1"), follow_redirects=False))
    assert res.reason == r.HTTP_STATUS and res.details[r.D_HTTP_STATUS] == 302
    assert res.details[r.D_HTTP_REDIRECTS] == 1  # received, not followed: counted, as blackbox does


async def test_each_hop_resolves_and_phases_add_up(site, resolver):
    hop = site.url("/", host="www.test")
    res = await run(http_check(site.url(f"/redirect-to?url={hop}"), resolvers=(resolver,)))
    assert res.success and res.details[r.D_HTTP_REDIRECTS] == 1
    assert r.PHASE_RESOLVE in res.phases  # the first hop was an IP literal, the second a name
    assert any("resolved www.test" in line for line in res.log)
    assert site.seen[1].headers["host"] == f"www.test:{site.port}"


async def test_redirect_failure_on_a_later_hop(site, resolver):
    res = await run(http_check(site.url("/redirect-to?url=http://servfail.test/"), resolvers=(resolver,)))
    assert res.reason == r.DNS_SERVFAIL and res.details[r.D_HTTP_REDIRECTS] == 1


async def test_post_then_303_continues_as_get(site):
    res = await run(http_check(site.url("/redirect-to?status=303&url=/echo"), method="POST", body="payload"))
    assert res.success
    assert (site.seen[0].method, site.seen[0].body) == ("POST", b"payload")
    assert (site.seen[1].method, site.seen[1].body) == ("GET", b"")


async def test_credentials_do_not_follow_a_redirect_to_another_host(site, resolver):
    other = site.url("/echo", host="www.test")
    res = await run(http_check(site.url(f"/redirect-to?url={other}"), resolvers=(resolver,),
                               bearer_token="s3cret"))
    assert res.success
    assert site.seen[0].headers["authorization"] == "Bearer s3cret"
    assert "authorization" not in site.seen[1].headers


# --- request options ---------------------------------------------------------------------------------------
async def test_method_headers_body_and_basic_auth(site):
    res = await run(http_check(site.url("/echo"), method="PUT", body="data",
                               headers=(("X-Probe", "1"), ("Host", "configured.test")),
                               basic_auth=BasicAuth(username="probe", password="pw")))
    assert res.success
    seen = site.seen[0]
    assert (seen.method, seen.body) == ("PUT", b"data")
    assert seen.headers["x-probe"] == "1" and seen.headers["host"] == "configured.test"
    assert seen.headers["authorization"] == "Basic cHJvYmU6cHc="


async def test_credentials_from_files_are_reread_when_they_change(site, tmp_path):
    secret = tmp_path / "token"
    secret.write_text("first\n")
    check = http_check(site.url("/echo"), bearer_token_file=str(secret))
    assert (await run(check)).success
    secret.write_text("second-token\n")
    assert (await run(check)).success
    password = tmp_path / "password"
    password.write_text("pw")
    assert (await run(http_check(site.url("/echo"),
                                 basic_auth=BasicAuth(username="probe", password_file=str(password))))).success
    auths = [seen.headers["authorization"] for seen in site.seen]
    assert auths == ["Bearer first", "Bearer second-token", "Basic cHJvYmU6cHc="]


async def test_missing_credentials_file_fails_without_sending(site, tmp_path):
    res = await run(http_check(site.url("/echo"), bearer_token_file=str(tmp_path / "absent")))
    assert res.reason == r.CONFIG_FILE_UNREADABLE and site.seen == []  # the exporter's setup, not the target


async def test_hostname_override_sets_host_header(site):
    res = await run(http_check(site.url("/echo"), hostname="www.test"))
    assert res.success and site.seen[0].headers["host"] == "www.test"


async def test_compression_counts_uncompressed_bytes(site):
    import re

    res = await run(http_check(site.url("/gzip"), compression="gzip",
                               fail_if_body_not_matches_regexp=(re.compile(rb"operational"),)))
    assert res.success
    assert site.seen[0].headers["accept-encoding"] == "gzip"
    assert res.details[r.D_HTTP_CONTENT_LENGTH] == len(gzip.compress(CONTENT_BODY * 10))
    assert res.details[r.D_HTTP_BODY_BYTES] == len(CONTENT_BODY) * 10


async def test_proxy_url_gets_the_request(resolver):
    proxy = await start_raw("proxy")
    try:
        res = await run(http_check("http://www.test:8081/path?q=1", resolvers=(resolver,),
                                   proxy_url=f"http://{proxy.address}"))
    finally:
        await proxy.stop()
    assert res.success
    head = proxy.seen[0].decode()
    assert head.startswith("GET http://127.0.0.1:8081/path?q=1 HTTP/1.1")
    assert "Host: www.test:8081" in head
    assert {r.PHASE_RESOLVE, r.PHASE_CONNECT, r.PHASE_PROCESSING} <= set(res.phases)


async def test_https_through_a_connect_proxy(tls_site, pki):
    proxy = await start_raw("proxy")
    try:
        res = await run(http_check(tls_site.url("/"), hostname="www.test", tls_config=trusted(pki),
                                   proxy_url=f"http://{proxy.address}"))
    finally:
        await proxy.stop()
    assert res.success, res.log
    assert proxy.seen[0].startswith(f"CONNECT 127.0.0.1:{tls_site.port} HTTP/1.1".encode())
    assert res.details[r.D_TLS] == 1 and res.details[r.D_TLS_VERSION] == "TLS 1.3"
    assert tls_site.seen[0].headers["host"] == "www.test"
    assert r.PHASE_TLS not in res.phases  # the proxy path reports TLS set-up inside connect


async def test_credentials_in_the_url(site):
    res = await run(http_check(site.url("/echo", host="probe:pw@127.0.0.1")))
    assert res.success
    assert site.seen[0].headers["authorization"] == "Basic cHJvYmU6cHc="
    assert not any("pw@" in line for line in res.log)


# --- TLS ---------------------------------------------------------------------------------------------------
async def test_tls_success_reports_version_and_expiry(tls_site, pki):
    res = await run(http_check(tls_site.url("/"), tls_config=trusted(pki)))
    assert res.success
    assert set(res.phases) == {r.PHASE_CONNECT, r.PHASE_TLS, r.PHASE_PROCESSING, r.PHASE_TRANSFER}
    d = res.details
    assert d[r.D_TLS] == 1 and d[r.D_TLS_VERSION] == "TLS 1.3"
    assert abs(d[r.D_CERT_EXPIRY] - (time.time() + 400 * 86400)) < 2 * 86400
    assert any(line.split(" ", 1)[1].startswith("TLS TLSv1.3 established") for line in res.log)


async def test_tls_name_from_hostname_override(tls_site, pki):
    res = await run(http_check(tls_site.url("/"), hostname="www.test", tls_config=trusted(pki)))
    assert res.success and tls_site.seen[0].headers["host"] == "www.test"


async def test_tls_expired_certificate(pki):
    s = await start_http(ssl_context=pki.server_context(pki.expired))
    try:
        res = await run(http_check(s.url("/"), tls_config=trusted(pki)))
        assert res.reason == r.TLS_CERT_EXPIRED
        assert set(res.phases) == {r.PHASE_CONNECT, r.PHASE_TLS}
        skip = await run(http_check(s.url("/"), tls_config=TLSConfig(insecure_skip_verify=True)))
        assert skip.success and skip.details[r.D_CERT_EXPIRY] < time.time()
    finally:
        await s.stop()


async def test_tls_wrong_hostname_and_server_name(pki):
    s = await start_http(ssl_context=pki.server_context(pki.wrong_host))
    try:
        res = await run(http_check(s.url("/"), tls_config=trusted(pki)))
        assert res.reason == r.TLS_CERT_INVALID
        res = await run(http_check(s.url("/"), tls_config=trusted(pki, server_name="wrong.test")))
        assert res.success
    finally:
        await s.stop()


async def test_tls_unknown_ca(tls_site):
    res = await run(http_check(tls_site.url("/")))  # system roots do not know the test CA
    assert res.reason == r.TLS_CERT_INVALID


async def test_tls_never_completes_is_tls_handshake():
    raw = await start_raw("silent")
    try:
        res = await run(http_check(f"https://{raw.address}/"), timeout=0.3)
    finally:
        await raw.stop()
    assert res.reason == r.TLS_HANDSHAKE
    assert set(res.phases) == {r.PHASE_CONNECT, r.PHASE_TLS} and res.phases[r.PHASE_TLS] >= 0.2


async def test_tls_to_a_non_tls_peer_is_tls_handshake():
    raw = await start_raw("garbage")
    try:
        res = await run(http_check(f"https://{raw.address}/"))
    finally:
        await raw.stop()
    assert res.reason == r.TLS_HANDSHAKE


async def test_unloadable_ca_file_is_config_file_unreadable(tls_site, tmp_path):
    res = await run(http_check(tls_site.url("/"), tls_config=TLSConfig(ca_file=str(tmp_path / "nope.pem"))))
    assert res.reason == r.CONFIG_FILE_UNREADABLE and any("cannot load tls_config" in line for line in res.log)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    res = await run(http_check(tls_site.url("/"), tls_config=TLSConfig(ca_file=str(garbage))))
    assert res.reason == r.CONFIG_FILE_UNREADABLE


@pytest.mark.parametrize(("max_version", "without_cert"), [
    # TLS 1.2 rejects a missing client certificate inside the handshake; with TLS 1.3 the client's side
    # of the handshake is already done, so the rejection arrives as the server dropping the connection.
    (ssl.TLSVersion.TLSv1_2, r.TLS_HANDSHAKE),
    (ssl.TLSVersion.TLSv1_3, r.CONN_RESET),
])
async def test_client_certificate(pki, max_version, without_cert):
    server_ctx = pki.server_context(pki.valid, require_client_cert=True)
    server_ctx.maximum_version = max_version
    s = await start_http(ssl_context=server_ctx)
    try:
        with_cert = trusted(pki, cert_file=pki.client_cert_file, key_file=pki.client_key_file)
        assert (await run(http_check(s.url("/"), tls_config=with_cert))).success
        res = await run(http_check(s.url("/"), tls_config=trusted(pki)))
        assert res.reason == without_cert and r.PHASE_TLS in res.phases
        assert (r.PHASE_PROCESSING in res.phases) == (max_version == ssl.TLSVersion.TLSv1_3)
    finally:
        await s.stop()


async def test_fail_if_ssl_and_fail_if_not_ssl(site, tls_site, pki):
    res = await run(http_check(tls_site.url("/"), tls_config=trusted(pki), fail_if_ssl=True))
    assert res.reason == r.TLS_REQUIRED
    res = await run(http_check(site.url("/"), fail_if_not_ssl=True))
    assert res.reason == r.TLS_REQUIRED
    assert (await run(http_check(tls_site.url("/"), tls_config=trusted(pki), fail_if_not_ssl=True))).success


# --- contract ----------------------------------------------------------------------------------------------
async def test_cancellation_propagates(site):
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(http.probe(http_check(site.url("/slow-first-byte?delay=5")),
                                            deadline=loop.time() + 5))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_bug_is_internal_not_an_exception(site, monkeypatch):
    def broken(cfg):
        raise RuntimeError("boom")

    monkeypatch.setattr(http, "_prepare", broken)
    res = await run(http_check(site.url("/")))
    assert res.reason == r.INTERNAL


async def test_config_derived_state_is_cached(pki):
    check = http_check("http://127.0.0.1/", tls_config=trusted(pki), headers=(("X-A", "1"),))
    assert http._prepare(check.module.http) is http._prepare(check.module.http)
