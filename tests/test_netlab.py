"""The real backend of the outage lab: Knot, Unbound and nginx in network namespaces (exporter/lab/netlab).

Needs root (network namespaces) and the Debian packages knot, unbound, nginx-light and iproute2. Skipped
when not root outside CI; in CI (CI=true) a missing privilege or package fails. The world runs at speed 60:
the 300 s record TTL of the zones is 5 s here. Measured figures are printed (pytest -s) and recorded in
docs/lab.md.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.lab.netlab import netns, plan
from exporter.lab.netlab.world import RealWorld
from tests.helpers.binaries import require_binary
from tests.helpers.exporter_proc import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SPEED = 60.0  # record TTL 300 s -> 5 s
TTL = 5.0
CLIENT_TIMEOUT = 2.0
REPO = Path(__file__).resolve().parents[1]


def _require_root() -> None:
    if os.geteuid() == 0:
        return
    message = "the real lab backend needs root (network namespaces)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def _require_tools() -> None:
    _require_root()
    for name, package in (("ip", "iproute2"), ("knotd", "knot"), ("knotc", "knot"), ("unbound", "unbound"),
                          ("unbound-control", "unbound"), ("nginx", "nginx-light")):
        require_binary(name, f"/usr/sbin/{name}", package=package)


@pytest.fixture(scope="module")
def world():
    _require_tools()
    with RealWorld(speed=SPEED) as w:
        yield w


@pytest.fixture
def fresh(world: RealWorld) -> RealWorld:
    """The shared world back to healthy with cold resolvers."""
    world.reset()
    world.flush_caches()
    return world


def query(world: RealWorld, region: str, name: str, style: str = "public") -> str:
    """Rcode text of an A query sent from inside ``region`` to its resolver, or "TIMEOUT"."""
    server = plan.resolver(world.region_names.index(region), style)

    def ask() -> str:
        try:
            reply = dns.query.udp(dns.message.make_query(name, "A"), server, timeout=CLIENT_TIMEOUT)
        except dns.exception.Timeout:
            return "TIMEOUT"
        return dns.rcode.to_text(reply.rcode())
    return netns.run_in(world.region_ns(region), ask)


def answer(world: RealWorld, region: str, name: str) -> list[str]:
    server = plan.resolver(world.region_names.index(region), "public")
    reply = netns.run_in(world.region_ns(region), lambda: dns.query.udp(dns.message.make_query(name, "A"),
                                                                         server, timeout=CLIENT_TIMEOUT))
    return sorted(rd.address for rrset in reply.answer for rd in rrset)


def wait_until(predicate, timeout: float, every: float = 0.5) -> float | None:  # noqa: ANN001
    """Seconds until ``predicate()`` held, or None after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(every)
    return None


def test_nothing_can_route_outside_the_lab(world: RealWorld) -> None:
    report = world.routing_report()
    assert len(report) == len(world.netns.created) >= 4 + len(world.region_names)
    for ns, facts in report.items():
        assert ns.startswith(world.netns.prefix)
        for route in facts["routes"]:
            assert not route.startswith("default"), f"{ns}: {route}"
        for line in facts["addresses"]:
            fields = line.split()
            if fields[2] not in ("inet", "inet6"):
                continue
            address = ipaddress.ip_interface(fields[3])
            assert address.ip.is_loopback or address.ip in plan.LAB_NET, f"{ns}: {line}"
            assert fields[2] == "inet", f"{ns}: IPv6 should be off: {line}"


def test_region_resolves_through_its_unbound(fresh: RealWorld) -> None:
    for region in fresh.region_names:
        assert answer(fresh, region, "www.facebook.com") == [plan.edge(0)]
        assert query(fresh, region, "www.twitter.com", "isp") == "NOERROR"
    assert query(fresh, "eu-west", "nosuch.facebook.com") == "NXDOMAIN"


def test_withdrawn_routes_fail_after_the_ttl_and_recover_with_a_tail(fresh: RealWorld) -> None:
    w = fresh
    assert query(w, "eu-west", "www.facebook.com") == "NOERROR"  # cached for TTL seconds
    withdrawn = time.monotonic()
    w.set_nameservers("blackhole", operator="meta")
    assert query(w, "eu-west", "www.facebook.com") == "NOERROR", "the cached answer is served until its TTL"
    failed = wait_until(lambda: query(w, "eu-west", "www.facebook.com") in ("SERVFAIL", "TIMEOUT"), 30)
    assert failed is not None, "unbound kept answering for facebook.com with its nameservers unreachable"
    failing_after = time.monotonic() - withdrawn
    assert failing_after >= TTL - 1, "answers vanished before their TTL"
    assert query(w, "eu-west", "www.twitter.com") == "NOERROR"
    assert query(w, "eu-west", "www.instagram.com") == "NOERROR", "instagram's DNS is hosted elsewhere"
    time.sleep(10)  # an outage longer than one TTL, so both resolvers have given up on meta's servers
    outcomes = {query(w, "eu-west", "www.facebook.com", s) for s in plan.RESOLVER_STYLES}
    assert outcomes <= {"SERVFAIL", "TIMEOUT"}, outcomes
    outage = time.monotonic() - withdrawn

    w.set_nameservers("up", operator="meta")
    restored = time.monotonic()
    tails = {}
    for style in plan.RESOLVER_STYLES:
        done = wait_until(lambda s=style: query(w, "eu-west", "www.facebook.com", s) == "NOERROR",
                          150 - (time.monotonic() - restored))
        assert done is not None, f"the {style} resolver still failed 150 s after the routes came back"
        tails[style] = time.monotonic() - restored
    print(f"\nreal backend: answers failing {failing_after:.1f} s after withdrawal (TTL {TTL:.0f} s); "
          f"outage {outage:.0f} s; recovery tail after restore: "
          + ", ".join(f"{s} {t:.1f} s" for s, t in tails.items()))


def test_serve_stale_keeps_expired_answers_in_one_region(fresh: RealWorld) -> None:
    w = fresh
    w.set_serve_stale("eu-west", 3600)  # story seconds: a minute at speed 60
    for region in w.region_names:
        assert query(w, region, "www.facebook.com") == "NOERROR"
    w.set_nameservers("blackhole", operator="meta")
    time.sleep(TTL + 2)
    assert query(w, "eu-west", "www.facebook.com") == "NOERROR", "the expired answer should be served"
    assert wait_until(lambda: query(w, "us-east", "www.facebook.com") in ("SERVFAIL", "TIMEOUT"), 20)
    w.reset()
    assert all(r.serve_expired == 0 for r in w.resolvers.values())


def test_edge_modes_per_region(fresh: RealWorld) -> None:
    w = fresh
    edge = f"{plan.edge(0)}:80"
    eu, us = (w.region_ns(r) for r in w.region_names)
    w.set_edge("facebook", "eu-west", "unavailable")
    w.set_edge("facebook", "us-east", "blackhole")
    w.edges.settle()
    assert w.get(edge, ns=eu)[0] == 503
    with pytest.raises(OSError):  # dropped in the router: the connection times out
        w.get(edge, ns=us, timeout=1.5)
    w.set_edge("facebook", "all", "flapping", fail_ratio=0.5)
    w.edges.settle()
    statuses = [w.get(edge, ns=eu)[0] for _ in range(40)]
    assert {200, 503} == set(statuses)
    w.reset()
    w.edges.settle()
    assert w.get(edge, ns=eu) == (200, "facebook ok (eu-west)\n")
    assert w.get(edge, ns=us)[0] == 200


def _failure_reasons(text: str, service: str, check: str) -> set[str]:
    return {s.labels["reason"] for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "outage_probe_failure_info" and s.labels.get("service") == service
            and s.labels.get("check") == check}


def _success(text: str, service: str, check: str) -> list[float]:
    return [s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "probe_success" and s.labels.get("service") == service and s.labels.get("check") == check]


def test_real_exporter_inside_a_region_sees_meta_fail_and_controls_stay_up(fresh: RealWorld,
                                                                            tmp_path: Path) -> None:
    w = fresh
    config = tmp_path / "lab.yml"
    config.write_text(yaml.safe_dump(w.exporter_config(), sort_keys=False))
    exporter = w.start_exporter("eu-west", config)
    address = w.exporter_address("eu-west")

    def metrics() -> str:
        status, text = w.get(address, "/metrics")
        assert status == 200
        return text
    try:
        assert wait_until(lambda: _success(metrics(), "facebook", "dns") == [1.0, 1.0], 30), metrics()
        w.set_nameservers("blackhole", operator="meta")
        w.set_edge("facebook", "all", "unavailable")
        reasons: set[str] = set()

        def meta_failing() -> bool:
            nonlocal reasons
            reasons = _failure_reasons(metrics(), "facebook", "dns")
            return bool(reasons) and _success(metrics(), "facebook", "dns") == [0.0, 0.0]
        assert wait_until(meta_failing, 60, every=1.0), metrics()
        assert reasons <= {"dns_servfail", "dns_timeout"}, reasons
        text = metrics()
        assert _failure_reasons(text, "facebook", "authns"), "direct queries to meta's nameservers must fail"
        for control in ("control-a", "control-b"):
            assert set(_success(text, control, "dns")) == {1.0}
            assert set(_success(text, control, "http")) == {1.0}
        assert set(_success(text, "twitter", "dns")) == {1.0}

        w.isolate_region("eu-west")  # the central namespace can no longer scrape the region
        with pytest.raises(OSError):
            w.get(address, "/metrics", timeout=2.0)
        w.isolate_region("eu-west", False)
        assert w.get(address, "/-/ready")[0] == 200
    finally:
        exporter.stop()


def test_stale_cleanup_removes_only_dead_runs_with_the_lab_prefix() -> None:
    _require_tools()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = f"{netns.RUN_BASE}{dead.pid}x0badc0-central"
    alive = f"{netns.RUN_BASE}{os.getpid()}x0badc0-central"
    foreign = f"other{os.getpid()}-central"
    for name in (stale, alive, foreign):
        netns.run("ip", "netns", "add", name)
    try:
        removed = netns.cleanup_stale()
        remaining = netns.list_namespaces()
        assert stale in removed and stale not in remaining
        assert alive in remaining and foreign in remaining
    finally:
        for name in (stale, alive, foreign):
            netns.run("ip", "netns", "delete", name, check=False)


def test_teardown_on_error_removes_namespaces_processes_and_files() -> None:
    _require_tools()
    world = RealWorld(speed=SPEED)
    with pytest.raises(RuntimeError, match="boom"), world:
        pids = [d.proc.pid for d in [*(k.daemon for k in world.knots.values()), world.edges.daemon]]
        raise RuntimeError("boom")
    assert not [n for n in netns.list_namespaces() if n.startswith(world.netns.prefix)]
    assert not world.workdir.exists()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_demo_real_backend_runs_a_scenario_and_cleans_up_on_ctrl_c(tmp_path: Path) -> None:
    _require_tools()
    scenario = tmp_path / "drill.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "drill", "duration": "10m", "default_speed": 1,
        "phases": [{"at": "0s", "name": "baseline"},
                   {"at": "+2s", "name": "meta-dark", "effects": [
                       {"nameservers": {"provider": "meta", "state": "blackhole"}}]}]}))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "demo", "--backend", "real", "--scenario",
                             str(scenario), "--web.listen-address", f"127.0.0.1:{port}"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "meta-dark" in line:
                break
        out = "".join(lines)
        assert "exporter eu-west: http://127.0.0.1:" in out, out
        prefix = next(word for line in lines if "namespaces:" in line for word in line.split()
                      if word.startswith(netns.RUN_BASE)).rstrip("*")
        assert [n for n in netns.list_namespaces() if n.startswith(prefix)]
        status, body = _host_get(port, "/metrics")
        assert status == 200 and "outage_probe_check_info" in body
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out + rest
        assert not [n for n in netns.list_namespaces() if n.startswith(prefix)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _host_get(port: int, path: str) -> tuple[int, str]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()
