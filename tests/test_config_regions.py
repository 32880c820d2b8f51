"""Regions and resolvers: resolv.conf's nameservers for ``system``, the local region name, the implicit region."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from exporter.config import ConfigError, default_region_name, load_config_text
from exporter.config.regions import parse_resolv_conf, system_resolvers


def test_parse_resolv_conf() -> None:
    text = """
# generated
; also a comment
search example.internal
nameserver 127.0.0.53
nameserver   ::1   # trailing words are ignored
nameserver dns.example.org
nameserver
options edns0 trust-ad
nameserver fe80::1%eth0
domain example.internal
"""
    assert parse_resolv_conf(text) == ("127.0.0.53", "::1", "fe80::1%eth0")
    assert parse_resolv_conf("#nameserver 10.0.0.1\n") == ()


def test_system_resolvers_are_named_system_then_numbered(tmp_path: Path) -> None:
    rc = tmp_path / "resolv.conf"
    rc.write_text("nameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 2001:db8::1\n")
    assert [(r.name, r.host, r.port) for r in system_resolvers(str(rc))] == [
        ("system", "10.0.0.1", 53), ("system#2", "10.0.0.2", 53), ("system#3", "2001:db8::1", 53)]


def test_system_without_nameservers_names_the_region_path(tmp_path: Path) -> None:
    rc = tmp_path / "resolv.conf"
    rc.write_text("search example.internal\n")
    text = ("regions:\n  - {name: a, resolvers: ['127.0.0.1']}\n"
            "  - {name: b, resolvers: ['127.0.0.2', system]}\n")
    with pytest.raises(ConfigError) as info:
        load_config_text(text, resolv_conf=str(rc))
    assert str(info.value) == f'regions[1].resolvers[1]: cannot use "system": no nameserver in {rc}'


def test_implicit_region_with_services_needs_resolv_conf(tmp_path: Path) -> None:
    text = "services:\n  - name: a\n    checks: [{name: h, module: {prober: http}, target: 'http://127.0.0.1/'}]\n"
    missing = tmp_path / "missing"
    with pytest.raises(ConfigError) as info:
        load_config_text(text, default_region="lab", resolv_conf=str(missing))
    assert str(info.value) == (
        'regions: not set, so checks run in the local region "lab" with the "system" resolver, which is '
        f"unusable: cannot read {missing}: No such file or directory")


def test_default_region_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "Probe_01.EU-West.example.com")
    assert default_region_name() == "probe-01"

    monkeypatch.setattr(socket, "gethostname", lambda: "")
    assert default_region_name() == "local"

    def broken() -> str:
        raise OSError("no hostname")

    monkeypatch.setattr(socket, "gethostname", broken)
    assert default_region_name() == "local"


def test_implicit_region_uses_the_host_name_without_default_region(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rc = tmp_path / "resolv.conf"
    rc.write_text("nameserver 127.0.0.53\n")
    monkeypatch.setattr(socket, "gethostname", lambda: "edge-7.example.net")
    assert load_config_text("", resolv_conf=str(rc)).regions[0].name == "edge-7"
