"""The ``routing:`` and ``status_pages:`` sections (exporter/config/routing.py): what they turn into, each
error with the YAML path it names, and how ``--config.dump`` shows them."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from exporter.config import dump_config, load_config_text
from exporter.config.errors import ConfigError
from exporter.config.model import RoutingConfig, RoutingDerive, RoutingPrefix, StatusPage
from exporter.config.routing import parse_routing, parse_status_pages
from exporter.routing import decision


def parse(text: str) -> Any:
    """The one top-level section in ``text``, parsed by its own parser."""
    ((key, raw),) = yaml.safe_load(text).items()
    return (parse_routing if key == "routing" else parse_status_pages)(raw, key)


def test_defaults() -> None:
    routing = parse_routing(None, "routing")
    assert routing == RoutingConfig() and not routing.enabled
    assert routing.endpoint.startswith("wss://ris-live.ripe.net/")
    assert (routing.min_peers, routing.withdrawn_ratio) == (decision.MIN_PEERS, decision.WITHDRAWN_RATIO)
    assert routing.derive == RoutingDerive(nameservers=True, edges=False, ipv4_mask=24, ipv6_mask=48)
    assert parse_status_pages([], "status_pages") == ()
    config = load_config_text("")
    assert (config.routing, config.status_pages) == (RoutingConfig(), ())


def test_a_full_section() -> None:
    routing = parse("""
routing:
  enabled: true
  endpoint: ws://127.0.0.1:9/v1/ws/
  initial_state: http://127.0.0.1:9/data/looking-glass/data.json
  prefixes: [{prefix: 129.134.30.12/23, provider: meta}, {prefix: "2a03:2880::/32", provider: meta, role: edges}]
  derive: {nameservers: false, edges: true, ipv4_mask: 23}
  min_peers: 10
  withdrawn_ratio: 0.8
  stale_after: 2m
  queue_size: 500
""")
    assert routing == RoutingConfig(
        enabled=True, endpoint="ws://127.0.0.1:9/v1/ws/",
        initial_state="http://127.0.0.1:9/data/looking-glass/data.json",
        prefixes=(RoutingPrefix("129.134.30.0/23", "meta", "nameservers"),
                  RoutingPrefix("2a03:2880::/32", "meta", "edges")),
        derive=RoutingDerive(nameservers=False, edges=True, ipv4_mask=23, ipv6_mask=48),
        min_peers=10, withdrawn_ratio=0.8, stale_after=120.0, queue_size=500)
    pages = parse("""
status_pages:
  - {provider: meta, url: "http://127.0.0.1:9/", components: {WhatsApp: whatsapp}, interval: 30s}
  - {provider: x, url: "https://status.example/", interval: 5s}
""")
    assert pages == (StatusPage("meta", "http://127.0.0.1:9/", (("WhatsApp", "whatsapp"),), 30.0, 10.0),
                     StatusPage("x", "https://status.example/", (), 5.0, 5.0))  # timeout: 10s at most


@pytest.mark.parametrize(("text", "message"), [
    ("routing: {endpoint: 'http://x/'}", 'routing.endpoint: expected a ws or wss URL, got "http://x/"'),
    ("routing: {initial_state: 'wss://x/'}", 'routing.initial_state: expected a http or https URL, got "wss://x/"'),
    ("routing: {prefixes: [{prefix: 10.0.0.0/33, provider: a}]}",
     'routing.prefixes[0].prefix: invalid prefix "10.0.0.0/33" (expected e.g. "192.0.2.0/24")'),
    ("routing: {prefixes: [{prefix: 10.0.0.0/24}]}", 'routing.prefixes[0]: missing required key "provider"'),
    ("routing: {prefixes: [{prefix: 10.0.0.0/24, provider: a, role: dns}]}",
     'routing.prefixes[0].role: invalid value "dns" (allowed: "nameservers", "edges")'),
    ("routing: {prefixes: [{prefix: 10.0.0.0/24, provider: a}, {prefix: 10.0.0.1/24, provider: a}]}",
     'routing.prefixes[1]: duplicate prefix "10.0.0.0/24 a nameservers" (already used at routing.prefixes[0])'),
    ("routing: {withdrawn_ratio: 0}", "routing.withdrawn_ratio: must be greater than 0 and at most 1, got 0.0"),
    ("routing: {withdrawn_ratio: 1.5}", "routing.withdrawn_ratio: must be greater than 0 and at most 1, got 1.5"),
    ("routing: {min_peers: 0}", "routing.min_peers: must be at least 1, got 0"),
    ("routing: {queue_size: 0}", "routing.queue_size: must be at least 1, got 0"),
    ("routing: {derive: {ipv4_mask: 40}}", "routing.derive.ipv4_mask: must be between 8 and 32, got 40"),
    ("routing: {derive: {ipv6_mask: 7}}", "routing.derive.ipv6_mask: must be between 8 and 128, got 7"),
    ("routing: {stale_after: 60}", 'routing.stale_after: durations need a unit, e.g. "15s" (got 60)'),
    ("routing: {enabled: yes please}", "routing.enabled: expected true or false, got a string"),
    ("routing: {enabeld: true}", 'routing.enabeld: unknown key "enabeld"; did you mean "enabled"? (allowed: derive, '
                                 "enabled, endpoint, initial_state, min_peers, prefixes, queue_size, stale_after, "
                                 "withdrawn_ratio)"),
    ("routing: [1]", "routing: expected a mapping, got a list"),
    ("status_pages: {provider: m}", "status_pages: expected a list, got a mapping"),
    ("status_pages: [{provider: meta}]", 'status_pages[0]: missing required key "url"'),
    ("status_pages: [{provider: meta, url: 'ftp://x/'}]",
     'status_pages[0].url: expected a http or https URL, got "ftp://x/"'),
    ("status_pages: [{provider: meta, url: 'http:///no-host'}]",
     'status_pages[0].url: expected a http or https URL, got "http:///no-host"'),
    ("status_pages: [{provider: m, url: 'http://x/'}, {provider: m, url: 'http://y/'}]",
     'status_pages[1]: duplicate status page provider "m" (already used at status_pages[0])'),
    ("status_pages: [{provider: m, url: 'http://x/', components: [a]}]",
     "status_pages[0].components: expected a mapping of component name to service, got a list"),
    ("status_pages: [{provider: m, url: 'http://x/', components: {a: ' b'}}]",
     'status_pages[0].components.a: " b" must not start or end with whitespace'),
    ("status_pages: [{provider: m, url: 'http://x/', interval: 10s, timeout: 20s}]",
     "status_pages[0].timeout: must not be longer than the interval"),
])
def test_errors_name_the_yaml_path(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert str(info.value) == message
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    assert str(info.value) == message, "the loader reports the section's error as it is"


def test_dump_config_shows_the_signals_and_loads_back() -> None:
    text = """
routing:
  enabled: true
  endpoint: ws://127.0.0.1:9/v1/ws/
  prefixes: [{prefix: 129.134.30.0/23, provider: meta}]
  stale_after: 2m
status_pages:
  - {provider: meta, url: "http://127.0.0.1:9/", components: {WhatsApp: whatsapp}}
"""
    config = load_config_text(text)
    dumped = dump_config(config)
    assert "routing:" in dumped and "status_pages:" in dumped
    again = load_config_text(dumped)
    assert (again.routing, again.status_pages) == (config.routing, config.status_pages)
    assert "routing" not in dump_config(load_config_text(""))


def test_dump_config_masks_passwords_in_signal_urls() -> None:
    config = load_config_text("routing: {endpoint: 'wss://me:hunter2@relay.example/ws'}\n"
                              "status_pages: [{provider: p, url: 'https://me:hunter2@status.example/'}]\n")
    dumped = dump_config(config)
    assert "hunter2" not in dumped and "me:<secret>@relay.example" in dumped
    assert "me:<secret>@status.example" in dumped
