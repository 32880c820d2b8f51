"""The real backend's generated data without root: address plan, zone files, server configs, CLI option.

Server configurations are checked by the programs themselves (knotc conf-check, unbound-checkconf,
nginx -t), which skip locally and fail in CI when missing (tests/helpers/binaries.py).
"""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import dns.name
import dns.rdatatype
import dns.zone
import pytest

from exporter.lab import catalog as c
from exporter.lab.demo import build_parser
from exporter.lab.edges import edge_setting
from exporter.lab.netlab import knot, nginx, plan, unbound, zonefiles
from tests.helpers.binaries import require_binary


def _all_plan_addresses() -> list[str]:
    out = [plan.CENTRAL, plan.PARENT, plan.EDGE_PREFIX, plan.PARENT_PREFIX, plan.CENTRAL_PREFIX]
    out += [plan.nameserver(fi, n) for fi, f in enumerate(c.FLEETS) for n in range(len(f.names))]
    out += [plan.edge(si) for si in range(len(c.SITES))]
    for ri in range(len(c.KNOWN_REGIONS)):
        out += [plan.region_prefix(ri), plan.exporter_host(ri), *(plan.resolver(ri, s) for s in plan.RESOLVER_STYLES)]
    out += [a for i in range(1, 40) for a in plan.link(i)]
    return out


def test_every_address_of_the_plan_is_inside_198_18_0_0_15() -> None:
    for address in _all_plan_addresses():
        assert ipaddress.ip_network(address, strict=False).subnet_of(plan.LAB_NET), address
    assert not plan.in_lab("127.0.0.1") and not plan.in_lab("192.0.2.1") and plan.in_lab("198.19.255.2")


def test_zones_delegate_with_glue_and_scale_ttls_by_speed() -> None:
    lab = zonefiles.build()
    com = next(z for z in lab.parent if z.origin.to_text() == "com.")
    parsed = dns.zone.from_text(zonefiles.zone_text(com, 60), origin="com.", relativize=False)
    ns = parsed.find_rdataset("facebook.com.", "NS")
    assert sorted(r.target.to_text() for r in ns) == [f"{x}.ns.facebook.com." for x in "abcd"]
    assert ns.ttl == c.DELEGATION_TTL // 60
    glue = parsed.find_rdataset("a.ns.facebook.com.", "A")
    assert [r.address for r in glue] == [plan.nameserver(0, 0)]
    fb = dns.zone.from_text(zonefiles.zone_text(lab.children["facebook.com"], 60), origin="facebook.com.",
                            relativize=False)
    www = fb.find_rdataset("www.facebook.com.", "A")
    assert [r.address for r in www] == [plan.edge(0)] and www.ttl == 5
    soa = fb.find_rdataset("facebook.com.", "SOA")
    assert soa[0].minimum == 5
    root = dns.zone.from_text(zonefiles.zone_text(lab.parent[0], 1), origin=".", relativize=False)
    assert root.find_rdataset("parent.lab.", "A")[0].address == plan.PARENT
    assert {n.to_text() for n, rds in root.iterate_rdatasets(dns.rdatatype.NS)} >= {"com.", "lab.", "."}


def test_knot_config_is_accepted_by_knot(tmp_path: Path) -> None:
    knotc = require_binary("knotc", "/usr/sbin/knotc", package="knot")
    lab = zonefiles.build()
    zone = lab.children["twitter.com"]
    path = tmp_path / "twitter.com.zone"
    path.write_text(zonefiles.zone_text(zone, 1))
    conf = tmp_path / "knot.conf"
    conf.write_text(knot.config_text(tmp_path, plan.nameserver(3, 0), {"twitter.com.": path}))
    run = subprocess.run([knotc, "-c", str(conf), "conf-check"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_unbound_config_is_accepted_by_unbound_and_hints_at_the_lab_parent(tmp_path: Path) -> None:
    check = require_binary("unbound-checkconf", "/usr/sbin/unbound-checkconf", package="unbound")
    (tmp_path / "root.hints").write_text(unbound.root_hints())
    conf = tmp_path / "unbound.conf"
    conf.write_text(unbound.config_text(tmp_path, plan.resolver(0, "public")))
    run = subprocess.run([check, str(conf)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert plan.PARENT in unbound.root_hints() and "serve-expired" not in conf.read_text()


def test_nginx_config_is_accepted_by_nginx_and_maps_modes_per_region(tmp_path: Path) -> None:
    binary = require_binary("nginx", "/usr/sbin/nginx", package="nginx-light")
    regions = c.DEFAULT_REGIONS
    settings = {("facebook", "eu-west"): edge_setting("unavailable"),
                ("twitter", "us-east"): edge_setting("flapping", fail_ratio=0.25)}
    (tmp_path / "tmp").mkdir()
    text = nginx.config_text(tmp_path, c.SITES, regions, settings, generation=7)
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    run = subprocess.run([binary, "-t", "-c", str(conf), "-e", str(tmp_path / "error.log")],
                         capture_output=True, text=True)
    assert "syntax is ok" in run.stderr, run.stderr  # the test then binds, which the lab's addresses need
    assert "eu-west 503;" in text and "25.0% 503;" in text and "return 200 '7'" in text
    assert f"{plan.region_prefix(1)} us-east;" in text


def test_demo_has_a_backend_option_defaulting_to_the_simulation() -> None:
    parser = build_parser()
    assert parser.parse_args([]).backend == "sim"
    assert parser.parse_args(["--backend", "real"]).backend == "real"
    with pytest.raises(SystemExit):
        parser.parse_args(["--backend", "docker"])


def test_demo_real_backend_explains_what_it_needs(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from exporter.lab import demo

    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert demo.main(["--backend", "real", "--once"]) == 2
    assert "needs root" in capsys.readouterr().out


def test_zone_names_match_the_simulated_lab() -> None:
    lab = zonefiles.build()
    assert set(lab.children) == {z.origin for z in c.ZONES}
    assert {dns.name.from_text(n) for n in lab.ns_ip} == {dns.name.from_text(n) for f in c.FLEETS for n in f.names}
