"""Two-path HTTP: the resolved path and the pinned last known address, against local DNS and HTTPS peers."""

from __future__ import annotations

import asyncio
import dataclasses

import dns.name
import pytest

from exporter.config.model import Resolver, TLSConfig, TwoPath
from exporter.exposition import render_scheduled
from exporter.probers import http
from exporter.probers import result as r
from exporter.probers.twopath import Origin, Pins, pinned_check
from exporter.results import ResultStore
from tests.servers.dns import start_dns
from tests.servers.http import http_check, make_pki, start_http

WWW = dns.name.from_text("www.test.")


@pytest.fixture
async def peers(tmp_path):
    pki = make_pki(tmp_path)
    leaf = pki.ca.issue_cert("www.test")  # no IP in the certificate: only the right server name verifies
    site = await start_http(ssl_context=pki.server_context(leaf))
    dns_server = await start_dns({"www.test.": {"A": ["127.0.0.1"]}})
    try:
        yield pki, site, dns_server
    finally:
        await http.close()
        await dns_server.stop()
        await site.stop()


def two_path_check(pki, site, dns_server, *, max_age: float = 60.0):
    resolver = Resolver(dns_server.address, dns_server.host, dns_server.port)
    check = http_check(f"https://www.test:{site.port}/", resolvers=(resolver,),
                       tls_config=TLSConfig(ca_file=pki.ca_file))
    return dataclasses.replace(check, key="shop/https", two_path=TwoPath(max_age=max_age))


async def run(check, timeout: float = 1.0) -> r.ProbeResult:
    return await http.probe(check, deadline=asyncio.get_running_loop().time() + timeout)


def logged(result: r.ProbeResult, text: str) -> bool:
    return any(text in line for line in result.log)


async def test_dns_gone_origin_alive_then_origin_gone_too(peers):
    pki, site, dns_server = peers
    check = two_path_check(pki, site, dns_server)

    first = await run(check)
    assert first.success and r.D_PINNED_SUCCESS not in first.details
    assert logged(first, "two-path: no pinned address yet; only the resolved path ran")

    both = await run(check)  # DNS fine: the pinned path cross-checks the address DNS gave
    assert both.success and both.details[r.D_PINNED_SUCCESS] == 1 and both.details[r.D_PINNED_STATUS] == 200
    assert 0 <= both.details[r.D_PINNED_AGE] < 1 and both.details[r.D_PINNED_ADDRESS] == "127.0.0.1"

    dns_server.handler.modes[WWW] = "servfail"
    seen_before = len(site.seen)
    gone = await run(check)
    assert (gone.success, gone.reason) == (False, r.DNS_SERVFAIL)  # probe_success keeps the resolved verdict
    assert gone.details[r.D_PINNED_SUCCESS] == 1 and gone.details[r.D_PINNED_STATUS] == 200
    assert gone.details[r.D_PINNED_DURATION] > 0 and gone.details[r.D_PINNED_AGE] > 0
    assert logged(gone, "DNS gone, origin alive")
    pinned_requests = site.seen[seen_before:]
    assert len(pinned_requests) == 1  # only the pinned path reached the origin
    assert pinned_requests[0].headers["host"] == f"www.test:{site.port}"  # the original Host header
    assert logged(gone, f"GET https://127.0.0.1:{site.port}/ (Host www.test:{site.port})")

    await site.stop()
    dead = await run(check)
    assert (dead.success, dead.reason) == (False, r.DNS_SERVFAIL)
    assert (dead.details[r.D_PINNED_SUCCESS], dead.details[r.D_PINNED_STATUS]) == (0, 0)
    assert logged(dead, "origin gone too (resolution failed and the pinned address fails: conn_refused)")


async def test_a_wrong_address_from_dns_with_the_origin_still_at_the_pinned_one(peers):
    pki, site, dns_server = peers
    check = two_path_check(pki, site, dns_server)
    assert (await run(check)).success
    dns_server.handler.records[WWW] = {"A": ["127.0.0.9"]}  # nothing listens there
    res = await run(check)
    assert (res.success, res.reason, res.details[r.D_PINNED_SUCCESS]) == (False, r.CONN_REFUSED, 1)
    assert logged(res, "the resolved path failed (conn_refused) but the pinned address answers")
    again = await run(check)  # DNS answered, so its new address is pinned from now on
    assert again.details[r.D_PINNED_ADDRESS] == "127.0.0.9" and again.details[r.D_PINNED_SUCCESS] == 0
    assert logged(again, "both paths fail (conn_refused; pinned: conn_refused)")


async def test_a_pinned_address_ages_out(peers):
    pki, site, dns_server = peers
    check = two_path_check(pki, site, dns_server, max_age=0.2)
    assert (await run(check)).success
    dns_server.handler.modes[WWW] = "servfail"
    assert (await run(check)).details[r.D_PINNED_SUCCESS] == 1  # DNS gave it less than 0.2 s ago
    await asyncio.sleep(0.25)
    res = await run(check)
    assert not res.success and r.D_PINNED_SUCCESS not in res.details
    assert logged(res, "two-path: pinned address 127.0.0.1 aged out")
    assert r.D_PINNED_SUCCESS not in (await run(check)).details  # and stays gone while DNS fails


async def test_disabled_two_path_probes_once(peers):
    pki, site, dns_server = peers
    check = dataclasses.replace(two_path_check(pki, site, dns_server), two_path=TwoPath(enabled=False))
    for _ in range(2):
        res = await run(check)
        assert res.success and r.D_PINNED_SUCCESS not in res.details
    assert len(site.seen) == 2


def test_pinned_check_keeps_credentials_port_and_path_and_sets_the_host():
    check = dataclasses.replace(http_check("https://u:pw@www.test:8443/health?x=1"), two_path=TwoPath())
    pinned = pinned_check(check, Origin("::1", "www.test:8443"))
    assert pinned.target == "https://u:pw@[::1]:8443/health?x=1"
    assert (pinned.hostname, pinned.two_path) == ("www.test:8443", None)


def test_pins_expire_and_stay_bounded(monkeypatch):
    import exporter.probers.twopath as twopath

    monkeypatch.setattr(twopath, "MAX_PINS", 3)
    pins = Pins()
    for i in range(3):
        pins.remember(f"k{i}", Origin(f"127.0.0.{i}", "h"), now=float(i), max_age=10)
    assert pins.get("k0", 10, now=5.0)[0].origin.address == "127.0.0.0"
    pins.remember("k3", Origin("127.0.0.3", "h"), now=20.0, max_age=10)  # full: expired ones are dropped
    assert len(pins) == 1
    pin, expired = pins.get("k3", 10, now=31.0)
    assert pin is None and expired is not None and len(pins) == 0


def test_paths_are_exported_for_two_path_checks_only():
    from tests.helpers.factories import make_check, make_result

    plain = make_check("plain")
    two = make_check("two", two_path=TwoPath())
    store = ResultStore()
    store.set_checks([plain, two])
    details = {r.D_HTTP_STATUS: 503, r.D_PINNED_SUCCESS: 1, r.D_PINNED_DURATION: 0.02, r.D_PINNED_STATUS: 200,
               r.D_PINNED_AGE: 42.0, r.D_PINNED_ADDRESS: "127.0.0.1"}
    store.record(plain, make_result(False, reason=r.HTTP_STATUS, details={r.D_HTTP_STATUS: 503}))
    store.record(two, make_result(False, reason=r.HTTP_STATUS, duration=0.1, details=details))
    lines = [line for line in render_scheduled(store).splitlines() if line.startswith("outage_http_")]
    ident = 'service="svc",provider="svc",region="eu",check="two",target="http://127.0.0.1:8080/",resolver=""'
    assert lines == [
        f'outage_http_path_success{{{ident},path="resolved"}} 0',
        f'outage_http_path_success{{{ident},path="pinned"}} 1',
        f'outage_http_path_duration_seconds{{{ident},path="resolved"}} 0.1',
        f'outage_http_path_duration_seconds{{{ident},path="pinned"}} 0.02',
        f'outage_http_path_status_code{{{ident},path="resolved"}} 503',
        f'outage_http_path_status_code{{{ident},path="pinned"}} 200',
        f"outage_http_pinned_address_age_seconds{{{ident}}} 42.0",
    ]
    assert "127.0.0.1\"" not in "".join(lines).replace('target="http://127.0.0.1:8080/"', "")
