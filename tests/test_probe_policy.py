"""The /probe policy: the switch, allow lists, refused address classes, and secrets kept out of every output.

Refused addresses (169.254.0.0/16, metadata endpoints) must never be contacted, not even by a test: the
``connects`` fixture records every socket connect of the event loop and fails any to a non-loopback
address, so a guard that let one through fails the test instead of sending a packet.
"""

from __future__ import annotations

import asyncio
import io
import logging
import textwrap
from pathlib import Path

import pytest

from exporter import logs
from exporter.config import ConfigError, load_config_text
from exporter.config.probe_policy import (
    ConnectGuard,
    ConnectRefused,
    Endpoint,
    ProbePolicy,
    RateLimit,
    parse_ip,
)
from exporter.runtime import Runtime
from exporter.web import probeguard
from tests.helpers.probeweb import policy_config, refused, serve, serve_network_allow_list
from tests.helpers.text import sample, write
from tests.servers.dns import start_dns
from tests.servers.http import Site

SECRETS = ("pa55-in-module", "tok-in-module", "pw-in-target-url", "hdr-in-module")


# --- configuration ----------------------------------------------------------------------------------------
MODULES = "modules: {http_2xx: {prober: http}, tcp_connect: {prober: tcp}}\n"


def load(probe: str = ""):  # type: ignore[no-untyped-def]
    return load_config_text(MODULES + textwrap.dedent(probe), resolv_conf="/dev/null")


def test_defaults_allow_any_target_and_refuse_link_local() -> None:
    policy = load().probe
    assert policy == ProbePolicy()
    assert policy.enabled and policy.allow is None and policy.patterns_for("http_2xx") is None
    assert policy.rate_limit == RateLimit(rate=50.0, burst=100)


@pytest.mark.parametrize(("probe", "message"), [
    ("probe: {enable: false}", 'probe.enable: unknown key "enable"; did you mean "enabled"?'),
    ("probe: {enabled: 'no'}", "probe.enabled: expected true or false, got a string"),
    ("probe: {allow: {http_3xx: ['x']}}", 'probe.allow.http_3xx: unknown module "http_3xx" (known: http_2xx, '
                                         'tcp_connect; "*" means every module)'),
    ("probe: {allow: {http_2xx: 'x'}}", "probe.allow.http_2xx: expected a list, got a string"),
    ("probe: {allow: {http_2xx: ['ok', 'a:b:c']}}", 'probe.allow.http_2xx[1]: "a:b:c" is neither a host'),
    ("probe: {allow: {http_2xx: [{regex: '('}]}}", 'probe.allow.http_2xx[0].regex: invalid regular expression'),
    ("probe: {allow: {http_2xx: [{regexp: 'x'}]}}", 'probe.allow.http_2xx[0].regexp: unknown key "regexp"'),
    ("probe: {rate_limit: {rate: -1}}", "probe.rate_limit.rate: must not be negative"),
    ("probe: {rate_limit: {burst: 0}}", "probe.rate_limit.burst: must be at least 1, got 0"),
])
def test_config_errors_name_the_yaml_path(probe: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(probe)
    assert str(err.value).startswith(message), str(err.value)


def test_patterns_match_host_hostport_url_regex_and_networks() -> None:
    policy = load("""
        probe:
          allow:
            http_2xx:
              - "*.example.com"
              - "api.example.org:8443"
              - "https://status.example.net/health*"
              - {regex: "http://10\\\\.1\\\\.[0-9]+\\\\.[0-9]+:9100/metrics"}
              - "192.0.2.0/24"
              - "[2001:db8::1]:53"
    """).probe
    patterns = policy.patterns_for("http_2xx")
    assert patterns is not None
    assert [p.kind for p in patterns] == ["host", "hostport", "url", "regex", "cidr", "hostport"]

    def ok(host: str, port: int, target: str, addresses: tuple[str, ...] = ()) -> bool:
        ips = [parse_ip(a) for a in addresses]
        return any(p.matches(Endpoint(host, port, target), ips) for p in patterns)  # type: ignore[arg-type]

    assert ok("www.example.com", 80, "http://www.example.com/")
    assert ok("a.b.example.com", 443, "https://a.b.example.com/")
    assert not ok("example.com", 80, "http://example.com/")  # "*." needs a label before the domain
    assert not ok("example.com.evil.test", 80, "http://example.com.evil.test/")
    assert ok("api.example.org", 8443, "https://api.example.org:8443/")
    assert not ok("api.example.org", 443, "https://api.example.org/")
    assert ok("status.example.net", 443, "https://status.example.net/healthz")
    assert not ok("status.example.net", 443, "https://status.example.net/admin")
    assert ok("10.1.2.3", 9100, "http://10.1.2.3:9100/metrics")
    assert not ok("10.1.2.3", 9100, "http://10.1.2.3:9100/metrics?x")
    assert ok("192.0.2.7", 80, "http://192.0.2.7/")
    assert ok("web.internal", 80, "http://web.internal/", ("192.0.2.7", "192.0.2.8"))
    assert not ok("web.internal", 80, "http://web.internal/", ("192.0.2.7", "198.51.100.1"))
    assert not ok("web.internal", 80, "http://web.internal/")  # a name with no known address
    assert ok("2001:db8::1", 53, "[2001:db8::1]:53")


@pytest.mark.parametrize(("address", "default", "link_local_allowed"), [
    ("169.254.169.254", "cloud metadata address", "cloud metadata address"),
    ("169.254.170.2", "cloud metadata address", "cloud metadata address"),
    ("fd00:ec2::254", "cloud metadata address", "cloud metadata address"),
    ("100.100.100.200", "cloud metadata address", "cloud metadata address"),
    ("::ffff:169.254.169.254", "cloud metadata address", "cloud metadata address"),
    ("64:ff9b::a9fe:a9fe", "cloud metadata address", "cloud metadata address"),
    ("169.254.10.1", "link-local address", None),
    ("fe80::1", "link-local address", None),
    ("::ffff:169.254.10.1", "link-local address", None),
    ("127.0.0.1", None, None),
    ("10.0.0.1", None, None),
    ("2001:db8::1", None, None),
])
def test_blocked_address_classes(address: str, default: str | None, link_local_allowed: str | None) -> None:
    ip = parse_ip(address)
    assert ip is not None
    assert ProbePolicy().blocked(ip) == default
    assert ProbePolicy(allow_link_local=True).blocked(ip) == link_local_allowed
    assert ProbePolicy(allow_link_local=True, allow_cloud_metadata=True).blocked(ip) is None


# --- /probe -----------------------------------------------------------------------------------------------
async def test_probe_disabled_by_config(tmp_path: Path, site: Site) -> None:
    async with serve(policy_config(tmp_path, "enabled: false")) as client:
        resp = await client.get("/probe", params={"target": site.url("/")})
        assert resp.status == 403
        assert "the /probe endpoint is disabled (probe.enabled: false" in await resp.text()
        assert await refused(client, "disabled") == 1
        assert (await client.get("/-/healthy")).status == 200
    assert site.seen == []


async def test_probe_disabled_by_flag(tmp_path: Path, site: Site) -> None:
    async with serve(policy_config(tmp_path, "enabled: true"), disable_probe=True) as client:
        resp = await client.get("/probe", params={"target": site.url("/")})
        assert resp.status == 403
        assert "(--web.disable-probe)" in await resp.text()
    assert site.seen == []


async def test_allow_list_per_module(tmp_path: Path, site: Site, caplog: pytest.LogCaptureFixture) -> None:
    config = policy_config(tmp_path, f"""
        allow:
          http_2xx: ["http://127.0.0.1:{site.port}/allowed/*"]
          "*": ["localhost:{site.port}"]
    """)
    async with serve(config) as client:
        ok = await client.get("/probe", params={"target": site.url("/allowed/x")})
        assert ok.status == 200 and sample(await ok.text(), "probe_success") is not None
        caplog.set_level(logging.WARNING, logger="exporter.web")
        no = await client.get("/probe", params={"target": site.url("/other")})
        assert no.status == 403
        body = await no.text()
        assert body == (f'Probe refused: target "{site.url("/other")}" is not in the allow list of module '
                        '"http_2xx" (probe.allow)\n')
        tcp_ok = await client.get("/probe", params={"module": "tcp_connect", "target": f"localhost:{site.port}"})
        assert tcp_ok.status == 200
        tcp_no = await client.get("/probe", params={"module": "tcp_connect", "target": f"127.0.0.1:{site.port}"})
        assert tcp_no.status == 403
        assert await refused(client, "not_allowed") == 2
        assert await refused(client, "blocked_address") == 0
    assert [s.path for s in site.seen] == ["/allowed/x"]
    records = [r for r in caplog.records if r.getMessage() == "probe request refused"]
    assert [r.fields["reason"] for r in records] == ["not_allowed", "not_allowed"]  # type: ignore[attr-defined]


async def test_link_local_ip_target_is_refused_before_probing(tmp_path: Path, connects: list[str]) -> None:
    async with serve(policy_config(tmp_path, "allow_link_local: false")) as client:
        for target in ("http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/", "http://169.254.7.7/"):
            resp = await client.get("/probe", params={"target": target})
            assert resp.status == 403, target
        body = await resp.text()
        assert body == "Probe refused: 169.254.7.7 is a link-local address; refused unless " \
                       "probe.allow_link_local is true\n"
        resp = await client.get("/probe", params={"module": "tcp_connect", "target": "[fd00:ec2::254]:80"})
        assert "cloud metadata address; refused unless probe.allow_cloud_metadata is true" in await resp.text()
        assert await refused(client, "blocked_address") == 4
    assert connects == []


async def test_name_resolving_to_metadata_is_stopped_before_connecting(tmp_path: Path,
                                                                       connects: list[str]) -> None:
    dns = await start_dns({"metadata.test.": {"A": ["169.254.169.254"]}, "ok.test.": {"A": ["127.0.0.1"]}})
    config = write(tmp_path / "c.yml", f"""
        modules: {{http_2xx: {{prober: http, timeout: 3s}}}}
        regions: [{{name: lab, resolvers: ["{dns.address}"]}}]
    """)
    try:
        async with serve(config) as client:
            resp = await client.get("/probe", params={"target": "http://metadata.test/latest/", "debug": "true"})
            body = await resp.text()
            assert resp.status == 403
            assert body == ("Probe refused: the probe was stopped before connecting: 169.254.169.254 is a cloud "
                            "metadata address (probe.allow_cloud_metadata is false)\n")
            assert await refused(client, "blocked_address") == 1
    finally:
        await dns.stop()
    assert connects == []


async def test_redirect_to_link_local_is_stopped(tmp_path: Path, site: Site, connects: list[str]) -> None:
    async with serve(policy_config(tmp_path, "allow_cloud_metadata: false")) as client:
        redirect = site.url("/redirect-to?url=http://169.254.169.254/latest/meta-data/iam/")
        resp = await client.get("/probe", params={"target": redirect, "debug": "true"})
        assert resp.status == 200  # the target was allowed and probed; the redirect hop is a failure
        body = await resp.text()
        assert "169.254.169.254 is a cloud metadata address" in body
        assert "Result: failure: policy_refused" in body
        assert await refused(client, "blocked_address") == 1
    assert connects == []
    assert [s.path for s in site.seen] == [redirect.split(str(site.port), 1)[1]]  # the first hop only


async def test_allow_by_network_checks_the_address_a_name_resolves_to(tmp_path: Path, site: Site,
                                                                      connects: list[str]) -> None:
    async with serve_network_allow_list(tmp_path) as client:
        inside = await client.get("/probe", params={"target": site.url("/", host="inside.test")})
        assert inside.status == 200
        assert sample(await inside.text(), "probe_success") == 1
        outside = await client.get("/probe", params={"target": site.url("/", host="outside.test")})
        assert outside.status == 403
        assert "127.0.0.2 is outside the networks allowed for this module" in await outside.text()
        literal = await client.get("/probe", params={"target": site.url("/", host="127.0.0.2")})
        assert literal.status == 403  # refused on the request: no lookup, no connect
        assert await refused(client, "not_allowed") == 2
    assert connects == []


def test_allow_link_local_releases_link_local_but_not_metadata(tmp_path: Path) -> None:
    config = load_config_text(textwrap.dedent("""
        modules: {tcp_connect: {prober: tcp}}
        regions: [{name: lab, resolvers: ["127.0.0.1:1"]}]
        probe: {allow_link_local: true}
    """), resolv_conf="/dev/null")
    runtime = Runtime(None)
    runtime.config = config
    module = config.modules["tcp_connect"]
    region = config.regions[0]

    def check(target: str):  # type: ignore[no-untyped-def]
        return runtime.adhoc_check(module, target, region=region, timeout=1.0)

    guard = probeguard.pre_check(config.probe, "tcp_connect", check("169.254.7.7:80"))
    assert isinstance(guard, ConnectGuard)
    guard.check("169.254.7.7")  # allowed: no exception
    with pytest.raises(ConnectRefused):
        guard.check("169.254.169.254")  # a name resolving there, or a redirect, is still stopped
    refusal = probeguard.pre_check(config.probe, "tcp_connect", check("169.254.169.254:80"))
    assert isinstance(refusal, probeguard.Refusal) and refusal.reason == "blocked_address"


# --- secrets ----------------------------------------------------------------------------------------------
@pytest.fixture
def secrets_file(tmp_path: Path, site: Site) -> Path:
    return write(tmp_path / "secrets.yml", f"""
        defaults: {{interval: 200ms, timeout: 150ms}}
        modules:
          http_basic:
            prober: http
            http: {{basic_auth: {{username: prober, password: "{SECRETS[0]}"}}}}
          http_bearer:
            prober: http
            http:
              bearer_token: "{SECRETS[1]}"
              headers: {{X-Auth-Token: "{SECRETS[3]}"}}
        regions: [{{name: lab, resolvers: ["127.0.0.1:1"]}}]
        services:
          - name: shop
            checks:
              - {{name: a, module: http_basic, target: "{site.url('/status/503')}"}}
              - {{name: b, module: http_bearer, target: "{site.url('/status/500')}"}}
        probe:
          allow: {{"*": ["127.0.0.1:{site.port}"]}}
    """)


async def test_secrets_never_appear_in_outputs_or_logs(secrets_file: Path, site: Site) -> None:
    stream = io.StringIO()
    logs.setup("debug", "logfmt", stream=stream)
    try:
        async with serve(secrets_file) as client:
            target = site.url("/status/503").replace("http://", f"http://user:{SECRETS[2]}@")
            outputs = []
            for module in ("http_basic", "http_bearer"):
                resp = await client.get("/probe", params={"module": module, "target": target, "debug": "true"})
                outputs.append((resp.status, await resp.text()))
            outside = target.replace("127.0.0.1", "localhost")  # not in the allow list: refused, logged
            resp = await client.get("/probe", params={"module": "http_basic", "target": outside})
            outputs.append((resp.status, await resp.text()))
            resp = await client.get("/probe", params={"module": "http_basic", "target": "http://u:" + SECRETS[2]
                                                      + "@[::1"})  # unparsable: 400, echoed masked
            outputs.append((resp.status, await resp.text()))
            for _ in range(50):
                page = await (await client.get("/")).text()
                if page.count("http_status") >= 2:
                    break
                await asyncio.sleep(0.05)
            outputs.append((200, page))
            outputs.append((200, await (await client.get("/config")).text()))
    finally:
        logging.getLogger().handlers.clear()
    assert [status for status, _ in outputs] == [200, 200, 403, 400, 200, 200]
    for _, debug in outputs[:2]:
        assert "Logs for the probe:" in debug and "<secret>" in debug and "GET http://user:<secret>@127.0.0.1" in debug
    assert f"target \"http://localhost:{site.port}/status/503\" is not in the allow list" in outputs[2][1]
    assert "http_status" in outputs[4][1]  # the scheduled checks ran and failed: their logs are on the page
    # the credentials were sent where they belong: the module's own ones to the target's origin
    assert any(s.headers.get("authorization", "").startswith("Basic ") for s in site.seen)
    assert any(s.headers.get("x-auth-token") == SECRETS[3] for s in site.seen)
    log_text = stream.getvalue()
    assert "probe request refused" in log_text and "user:<secret>@localhost" in log_text
    for secret in SECRETS:
        for status, text in outputs:
            assert secret not in text, (status, text)
        assert secret not in log_text
