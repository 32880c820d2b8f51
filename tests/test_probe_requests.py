"""/probe against hostile requests: the allow list on every redirect hop, a deadline no header can lift,
and parameters validated before anything is probed.

Every peer is on loopback. A second listener on 127.0.0.2 (or another port) records connections, so a
redirect the policy should have stopped shows up as a connection it must never receive.
"""

from __future__ import annotations

import asyncio
import logging
import os
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from exporter.config import load_config_text
from exporter.probers import http as http_prober
from exporter.probers import result as r
from exporter.runtime import PROBE_TIMEOUT_CAP, Runtime
from tests.helpers.probeweb import loopback_only, policy_config, refused, serve, serve_network_allow_list
from tests.helpers.text import sample, write
from tests.servers.dns import start_dns
from tests.servers.hostile import start_hostile
from tests.servers.http import Site, start_http


def failure_reason(body: str) -> str | None:
    for line in body.splitlines():
        if line.startswith("outage_probe_failure_info{"):
            return line.split('reason="', 1)[1].split('"', 1)[0]
    return None


# --- the allow list on every redirect hop -------------------------------------------------------------------
@pytest.mark.parametrize("allow", ["127.0.0.1:{port}", "http://127.0.0.1:{port}/*", "127.0.0.1",
                                   "{{regex: 'http://127\\.0\\.0\\.1:{port}/.*'}}"])
async def test_redirect_to_a_host_outside_the_allow_list_is_never_contacted(
        tmp_path: Path, site: Site, allow: str, caplog: pytest.LogCaptureFixture) -> None:
    other = await start_hostile("never_answer", host="127.0.0.2")
    config = policy_config(tmp_path, f'allow: {{http_2xx: ["{allow.format(port=site.port)}"]}}'
                           if not allow.startswith("{{") else
                           f"allow: {{http_2xx: [{allow.format(port=site.port)}]}}")
    try:
        async with serve(config) as client:
            caplog.set_level(logging.WARNING, logger="exporter.web")
            away = site.url(f"/redirect-to?url=http://127.0.0.2:{other.port}/internal")
            resp = await client.get("/probe", params={"target": away})
            assert resp.status == 200
            body = await resp.text()
            assert sample(body, "probe_success") == 0
            assert failure_reason(body) == r.POLICY_REFUSED
            assert sample(body, "probe_http_redirects") == 1
            debug = await (await client.get("/probe", params={"target": away, "debug": "true"})).text()
            assert f'redirect target "http://127.0.0.2:{other.port}/internal" is not in the allow list' in debug
            assert await refused(client, "not_allowed") == 2
    finally:
        await other.stop()
    assert other.connections == 0
    records = [x for x in caplog.records if x.getMessage() == "probe request refused"]
    assert len(records) == 2 and records[0].fields["reason"] == "not_allowed"  # type: ignore[attr-defined]


async def test_redirect_to_another_port_or_path_of_an_allowed_host_is_stopped(tmp_path: Path, site: Site) -> None:
    other = await start_hostile("never_answer")  # 127.0.0.1, another port
    config = policy_config(tmp_path, f'allow: {{http_2xx: ["http://127.0.0.1:{site.port}/ok/*", '
                                     f'"http://127.0.0.1:{site.port}/redirect-to*"]}}')
    try:
        async with serve(config) as client:
            for location in (f"http://127.0.0.1:{other.port}/ok/x", "/status/200"):
                resp = await client.get("/probe", params={"target": site.url(f"/redirect-to?url={location}")})
                body = await resp.text()
                assert failure_reason(body) == r.POLICY_REFUSED, location
    finally:
        await other.stop()
    assert other.connections == 0
    assert [s.path.split("?")[0] for s in site.seen] == ["/redirect-to", "/redirect-to"]  # never /status/200


async def test_redirects_within_the_allow_list_are_followed(tmp_path: Path, site: Site) -> None:
    second = await start_http(host="127.0.0.2")
    config = policy_config(tmp_path, f'allow: {{http_2xx: ["127.0.0.1:{site.port}", "127.0.0.2:{second.port}"]}}')
    try:
        async with serve(config) as client:
            chain = await (await client.get("/probe", params={"target": site.url("/redirect/3")})).text()
            assert sample(chain, "probe_success") == 1 and sample(chain, "probe_http_redirects") == 3
            away = site.url(f"/redirect-to?url={second.url('/')}")
            hop = await (await client.get("/probe", params={"target": away})).text()
            assert sample(hop, "probe_success") == 1
            assert await refused(client, "not_allowed") == 0
    finally:
        await second.stop()
    assert [s.path for s in second.seen] == ["/"]


async def test_network_patterns_judge_each_hops_resolved_address(tmp_path: Path, site: Site,
                                                                  connects: list[str]) -> None:
    other = await start_hostile("never_answer", host="127.0.0.2")
    try:
        async with serve_network_allow_list(tmp_path) as client:
            for location, why in ((f"http://outside.test:{other.port}/", "127.0.0.2 is outside the networks"),
                                  (f"http://127.0.0.2:{other.port}/", "is not in the allow list")):
                target = site.url(f"/redirect-to?url={location}", host="inside.test")
                resp = await client.get("/probe", params={"target": target, "debug": "true"})
                body = await resp.text()
                assert "Result: failure: policy_refused" in body and why in body, location
            inside = site.url(f"/redirect-to?url={site.url('/', host='inside.test')}", host="inside.test")
            ok = await (await client.get("/probe", params={"target": inside})).text()
            assert sample(ok, "probe_success") == 1
            assert await refused(client, "not_allowed") == 2
    finally:
        await other.stop()
    assert other.connections == 0
    assert connects == []


async def test_scheduled_checks_are_not_subject_to_the_allow_list(tmp_path: Path, site: Site) -> None:
    second = await start_http(host="127.0.0.2")
    away = site.url(f"/redirect-to?url={second.url('/')}")
    config = write(tmp_path / "c.yml", f"""
        defaults: {{interval: 300ms, timeout: 300ms}}
        modules: {{http_2xx: {{prober: http}}}}
        regions: [{{name: lab, resolvers: ["127.0.0.1:1"]}}]
        services: [{{name: shop, checks: [{{name: web, module: http_2xx, target: "{away}"}}]}}]
        probe: {{allow: {{http_2xx: ["127.0.0.1:{site.port}"]}}}}
    """)
    try:
        async with serve(config) as client:
            deadline = time.monotonic() + 5
            while not second.seen and time.monotonic() < deadline:
                await client.get("/-/healthy")
            metrics = await (await client.get("/metrics")).text()
            assert await refused(client, "not_allowed") == 0
    finally:
        await second.stop()
    assert second.seen, "the scheduled check's redirect was not followed"
    assert sample(metrics, "outage_probe_failure_info") is None


# --- the deadline ---------------------------------------------------------------------------------------------
BAD_SCRAPE_TIMEOUTS = ("nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1", "0", "-0.0", "abc", " ", "0x10")


async def test_bad_scrape_timeout_headers_never_lift_the_deadline(tmp_path: Path) -> None:
    peer = await start_hostile("never_answer")
    config = write(tmp_path / "c.yml", """
        defaults: {interval: 5s, timeout: 1s}
        modules: {http_2xx: {prober: http}, tcp_banner: {prober: tcp, tcp: {query_response: [{expect: "^220"}]}}}
        regions: [{name: lab, resolvers: ["127.0.0.1:1"]}]
        probe: {rate_limit: {rate: 0}}
    """)

    async def timed(module: str, value: str) -> tuple[str, float, str]:
        target = peer.url("/") if module == "http_2xx" else peer.address
        started = time.monotonic()
        resp = await client.get("/probe", params={"module": module, "target": target},
                                headers={"X-Prometheus-Scrape-Timeout-Seconds": value})
        body = await resp.text()
        assert resp.status == 200, (value, body)
        return value, time.monotonic() - started, body

    try:
        async with serve(config) as client:
            async with asyncio.timeout(10):  # a lifted deadline would otherwise hang the test
                runs = await asyncio.gather(*(timed(m, v) for v in BAD_SCRAPE_TIMEOUTS
                                              for m in ("http_2xx", "tcp_banner")))
    finally:
        await peer.stop()
    for value, elapsed, body in runs:
        assert 0.9 < elapsed < 2.5, f"header {value!r}: probe took {elapsed:.2f}s (defaults.timeout is 1s)"
        assert sample(body, "probe_success") == 0 and failure_reason(body) == r.TIMEOUT, value


async def test_a_huge_scrape_timeout_is_held_by_the_module_timeout(tmp_path: Path) -> None:
    peer = await start_hostile("never_answer")
    config = write(tmp_path / "c.yml", """
        modules: {http_2xx: {prober: http, timeout: 1s}}
        regions: [{name: lab, resolvers: ["127.0.0.1:1"]}]
    """)
    try:
        async with serve(config) as client:
            for value in ("1e300", "86400"):
                started = time.monotonic()
                resp = await client.get("/probe", params={"target": peer.url("/")},
                                        headers={"X-Prometheus-Scrape-Timeout-Seconds": value})
                assert failure_reason(await resp.text()) == r.TIMEOUT
                assert time.monotonic() - started < 2.5, value
    finally:
        await peer.stop()


@pytest.mark.parametrize(("header", "module_timeout", "expected"), [
    (None, 0.0, PROBE_TIMEOUT_CAP),  # defaults.timeout of 5m is capped
    ("1e300", 0.0, PROBE_TIMEOUT_CAP),
    ("30", 0.0, 29.5),
    ("0.2", 0.0, 0.1),
    ("30", 2.0, 2.0),
    ("inf", 2.0, 2.0),
    ("nan", 0.0, PROBE_TIMEOUT_CAP),
])
def test_probe_timeout_has_a_hard_upper_bound(header: str | None, module_timeout: float, expected: float) -> None:
    config = load_config_text(textwrap.dedent(f"""
        defaults: {{interval: 10m, timeout: 5m}}
        modules: {{http_2xx: {{prober: http{", timeout: " + str(module_timeout) + "s" if module_timeout else ""}}}}}
    """), resolv_conf="/dev/null")
    runtime = Runtime(None)
    runtime.config = config
    assert runtime.probe_timeout(config.modules["http_2xx"], header) == pytest.approx(expected)


# --- parameters -----------------------------------------------------------------------------------------------
@pytest.fixture
def params_config(tmp_path: Path) -> Path:
    return write(tmp_path / "c.yml", """
        defaults: {interval: 5s, timeout: 1s}
        modules:
          http_2xx: {prober: http}
          tcp_connect: {prober: tcp}
          dns_a: {prober: dns, dns: {query_name: www.test}}
        regions: [{name: lab, resolvers: ["127.0.0.1:1"]}]
        probe: {rate_limit: {rate: 0}}
    """)


@pytest.mark.parametrize(("params", "message"), [
    ({"target": "http://127.0.0.1:1/\n"}, 'parameter "target" contains the control character U+000A'),
    ({"target": "http://127.0.0.1:1/a\x00b"}, 'parameter "target" contains the control character U+0000'),
    ({"target": "http://127.0.0.1:1/", "hostname": "www.test\r\nX-Injected: 1"},
     'parameter "hostname" contains the control character U+000D'),
    ({"target": "http://127.0.0.1:1/", "module": "http_2xx\x7f"},
     'parameter "module" contains the control character U+007F'),
    ({"target": "http://127.0.0.1:1/", "region": "lab\x85"},
     'parameter "region" contains the control character U+0085'),
    ({"target": "http://127.0.0.1:1/", "debug": "\x1b[31m"}, 'parameter "debug" contains the control character U+001B'),
    ({"target": "http://127.0.0.1:1/", "debug": "yes"}, 'parameter "debug" must be true or false'),
    ({"target": "http://127.0.0.1:1/" + "x" * 5000}, 'parameter "target" is 5019 characters long; at most 4096'),
    ({"target": "http://127.0.0.1:1/", "module": "m" * 200}, 'parameter "module" is 200 characters long'),
    ({"target": "http://127.0.0.1:1/", "hostname": "a..b"}, 'parameter "hostname" is not a host name or address '
                                                            "(empty label): 'a..b'"),
    ({"target": "http://127.0.0.1:1/", "hostname": "x" * 64 + ".test"}, 'parameter "hostname" is not a host name'),
    ({"target": "http://127.0.0.1:1/", "hostname": "www.test:0"}, "parameter \"hostname\" has an invalid port"),
    ({"target": "http://127.0.0.1:1/", "hostname": "[zz]"}, 'parameter "hostname" is not a host name or address'),
    ({"target": "http://a..b.invalid/"}, 'Invalid target "http://a..b.invalid/": invalid host: empty label'),
    ({"target": "http://127.0.0.1:99999/"}, "not an http(s) URL with a host and a valid port"),
    ({"target": "ftp://127.0.0.1/"}, "not an http(s) URL with a host and a valid port"),
    ({"target": "http://%00.invalid/"}, "invalid host: invalid label '%00'"),
    ({"module": "tcp_connect", "target": "a..b:80"}, "invalid host: empty label"),
    ({"module": "tcp_connect", "target": "127.0.0.1"}, "not host:port and a valid port"),
    ({"module": "dns_a", "target": "a..b"}, "invalid DNS server: empty label"),
    ({"module": "dns_a", "target": "x" * 64}, "invalid DNS server: invalid label"),
    ({"module": "dns_a", "target": "[zz]:53"}, "invalid DNS server: invalid label '[zz]'"),
])
async def test_invalid_parameters_are_400_naming_the_parameter(params_config: Path, params: dict[str, str],
                                                               message: str) -> None:
    async with serve(params_config) as client:
        resp = await client.get("/probe", params=params)
        body = await resp.text()
    assert resp.status == 400, body
    assert message in body
    assert body.count("\n") == 1 and body.endswith("\n")  # one line
    assert all(c == "\n" or c.isprintable() for c in body), body


@pytest.mark.parametrize("name", ["target", "module", "region", "hostname", "debug"])
async def test_repeated_parameters_are_400(params_config: Path, name: str) -> None:
    values = {"target": "http://127.0.0.1:1/", "module": "http_2xx", "region": "lab", "hostname": "www.test",
              "debug": "false"}
    query = [(key, value) for key, value in values.items()] + [(name, values[name])]
    async with serve(params_config) as client:
        resp = await client.get("/probe", params=query)
        assert (resp.status, await resp.text()) == (
            400, f'Invalid request: parameter "{name}" is given 2 times; give it once\n')


async def test_valid_parameters_still_probe(params_config: Path, site: Site) -> None:
    async with serve(params_config) as client:
        for params in ({"target": site.url("/"), "hostname": "www.test:8080", "debug": "TRUE"},
                       {"target": site.url("/").removeprefix("http://"), "hostname": "[::1]", "debug": ""},
                       {"target": site.url("/"), "hostname": "127.0.0.1", "region": "lab"},
                       {"target": site.url("/", host="localhost."), "debug": "false"},
                       {"module": "tcp_connect", "target": f"localhost:{site.port}"},
                       {"module": "dns_a", "target": "127.0.0.1:1"},
                       {"module": "dns_a", "target": "ns1.invalid:53"}):
            resp = await client.get("/probe", params=params)
            assert resp.status == 200, (params, await resp.text())


# --- fuzzing: no request reaches `internal` or a 5xx ----------------------------------------------------------
class ProbeHarness:
    """A started exporter (one event loop for every example) with a loopback site and a local DNS server
    that answers www.test and nothing else (names under .invalid get NXDOMAIN)."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.loop = asyncio.new_event_loop()
        self.contacted = loopback_only(monkeypatch, self.loop)
        self.site = self.loop.run_until_complete(start_http())
        self.dns = self.loop.run_until_complete(start_dns({"www.test.": {"A": ["127.0.0.1"], "AAAA": ["::1"]}}))
        config = write(tmp_path / "fuzz.yml", f"""
            defaults: {{interval: 5s, timeout: 500ms}}
            modules:
              http_2xx: {{prober: http}}
              https: {{prober: http, timeout: 400ms, http: {{tls_config: {{insecure_skip_verify: true}}}}}}
              tcp_connect: {{prober: tcp}}
              dns_a: {{prober: dns, dns: {{query_name: www.test}}}}
            regions: [{{name: lab, resolvers: ["{self.dns.address}"]}}]
            probe:
              rate_limit: {{rate: 0}}
              allow: {{"*": ["127.0.0.0/8", "::1/128", "localhost", "*.invalid", "*.invalid:*", "www.test"]}}
        """)
        self._serving = serve(config)
        self.client = self.loop.run_until_complete(self._serving.__aenter__())

    def get(self, params: list[tuple[str, str]], headers: dict[str, str]) -> tuple[int, str]:
        async def go() -> tuple[int, str]:
            async with asyncio.timeout(5):
                resp = await self.client.get("/probe", params=params, headers=headers)
                return resp.status, await resp.text()
        return self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self._serving.__aexit__(None, None, None))
        self.loop.run_until_complete(self.site.stop())
        self.loop.run_until_complete(self.dns.stop())
        self.loop.close()


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ProbeHarness]:
    h = ProbeHarness(tmp_path, monkeypatch)
    try:
        yield h
    finally:
        h.close()


_SAFE_HOSTS = st.sampled_from(["127.0.0.1", "127.0.0.2", "127.9.8.7", "localhost", "localhost.", "[::1]",
                               "www.test", "WWW.TEST", "nx.invalid", "a.b.invalid"])
_INVALID_NAMES = st.builds(lambda label: f"{label}.invalid",
                           st.text(alphabet=st.characters(blacklist_characters="/\\@?#[]:%"), max_size=70))
_HOSTS = st.one_of(_SAFE_HOSTS, _SAFE_HOSTS, _SAFE_HOSTS, _INVALID_NAMES,
                   st.from_regex(r"[a-z0-9_.-]{0,70}\.invalid", fullmatch=True))
_PORTS = st.one_of(st.none(), st.integers(1, 65535).map(str), st.integers(-2, 70000).map(str),
                   st.text(alphabet="0123456789abcx+-. %\x00\n\t", max_size=7))
_SCHEMES = st.sampled_from(["http://"] * 4 + ["https://", "HTTP://", "", "ftp://", "http:/", "tls://"])
_USERINFO = st.sampled_from(["", "", "", "user@", "u:p@", "@", ":@"])
_ANY_TEXT = st.text(max_size=40)  # every code point, control characters included
_PATHS = st.one_of(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=30),
                   st.just("status/503"), st.just("redirect/2"), st.just(""), _ANY_TEXT)


def _usually(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Mostly ``valid`` values, sometimes anything at all."""
    return st.one_of(*[valid] * 7, _ANY_TEXT)


@st.composite
def _targets(draw: st.DrawFn, site_port: int) -> tuple[str, str]:
    module = draw(st.sampled_from(["http_2xx", "https", "tcp_connect", "dns_a"]))
    host = draw(_HOSTS)
    port = draw(st.one_of(_PORTS, st.just(str(site_port)), st.just(str(site_port))))
    hostport = host if port is None else f"{host}:{port}"
    if module in ("http_2xx", "https"):
        return module, f"{draw(_SCHEMES)}{draw(_USERINFO)}{hostport}/{draw(_PATHS)}"
    return module, (draw(st.sampled_from(["", "", "tls://"])) if module == "dns_a" else "") + hostport


@st.composite
def _requests(draw: st.DrawFn, site_port: int) -> tuple[list[tuple[str, str]], dict[str, str]]:
    module, target = draw(_targets(site_port))
    params: list[tuple[str, str]] = [("target", target), ("module", draw(_usually(st.just(module))))]
    optional = (("hostname", _usually(_SAFE_HOSTS)), ("region", _usually(st.just("lab"))),
                ("debug", _usually(st.sampled_from(["true", "false", "TRUE", ""]))))
    for name, strategy in optional:
        for _ in range(draw(st.sampled_from([0] * 6 + [1] * 5 + [2]))):  # twice: a 400
            params.append((name, draw(strategy)))
    if draw(st.booleans()):
        params.append((draw(_ANY_TEXT), draw(_ANY_TEXT)))  # a parameter /probe does not know
    timeout = draw(st.one_of(st.none(), st.sampled_from(["nan", "inf", "-1", "0", "1e999", "abc"]),
                             st.floats(allow_nan=True, allow_infinity=True).map(repr)))
    return draw(st.permutations(params)), ({} if timeout is None else
                                          {"X-Prometheus-Scrape-Timeout-Seconds": timeout})


@settings(max_examples=int(os.environ.get("PROBE_FUZZ_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_requests_never_reach_internal_or_5xx(harness: ProbeHarness, data: st.DataObject) -> None:
    params, headers = data.draw(_requests(harness.site.port))
    status, body = harness.get(params, headers)
    event(f"HTTP {status}")
    assert status == 200 or 400 <= status < 500, (status, params, body)
    assert status < 500
    if status == 200:
        reason = failure_reason(body) or (body.split("Result: failure: ", 1)[1].split("\n", 1)[0]
                                          if "Result: failure: " in body else None)
        assert "probe_success" in body, body
        assert reason is None or reason in r.REASONS, body
        assert reason != r.INTERNAL, (params, body)
        event(f"reason {reason}")
    else:
        assert body.count("\n") == 1, body  # one line saying what is wrong
        event(body.split("\"")[1] if body.startswith("Invalid request") else body.split(" ", 2)[0])
    assert harness.contacted == []


@settings(max_examples=int(os.environ.get("PROBE_FUZZ_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_targets_never_reach_internal(harness: ProbeHarness, data: st.DataObject) -> None:
    """Only the target varies, so most requests get as far as a probe."""
    module, target = data.draw(_targets(harness.site.port))
    status, body = harness.get([("module", module), ("target", target)], {})
    event(f"HTTP {status}")
    assert status in (200, 400), (status, target, body)
    reason = failure_reason(body)
    event(f"reason {reason}")
    assert reason != r.INTERNAL, (target, body)
    assert harness.contacted == []


async def test_an_internal_probe_result_is_counted_for_the_alert(params_config: Path, site: Site,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """/probe keeps no series: a probe ending ``internal`` (an exporter bug) must still reach /metrics."""
    async def broken(self) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug in the prober")

    monkeypatch.setattr(http_prober._Run, "run", broken)
    async with serve(params_config) as client:
        resp = await client.get("/probe", params={"target": site.url("/")})
        assert resp.status == 200 and "probe_success 0" in await resp.text()
        metrics = await (await client.get("/metrics")).text()
    assert sample(metrics, "outage_exporter_probe_endpoint_failures_total", module="http_2xx",
                  reason="internal") == 1
