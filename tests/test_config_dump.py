"""The effective config written back as YAML: secrets masked (in dumps and in error messages), loads back."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from exporter.config import ConfigError, dump_config, load_config, load_config_text
from tests.helpers.configfiles import blackbox_yml

TESTDATA = Path(__file__).parent / "testdata"
SECRETS_CONFIG = """
regions: [{name: lab, resolvers: ["127.0.0.1"]}]
modules:
  basic:
    prober: http
    http:
      basic_auth: {username: alice, password: hunter2-basic}
      headers: {Authorization: "Bearer hdr-token-1", X-Auth-Token: hdr-token-2, Accept: "text/html"}
      proxy_url: "http://proxyuser:proxy-pass-3@127.0.0.1:3128/"
  bearer:
    prober: http
    http: {bearer_token: bearer-tok-4}
services:
  - name: s
    checks:
      - {name: c, module: basic, target: "https://bob@127.0.0.1/"}
"""


def test_dump_masks_secrets() -> None:
    config = load_config_text(SECRETS_CONFIG)
    text = dump_config(config)
    secrets = ("hunter2-basic", "hdr-token-1", "hdr-token-2", "proxy-pass-3", "bearer-tok-4")
    assert [s for s in secrets if s in text] == []
    doc = yaml.safe_load(text)
    http = doc["modules"]["basic"]["http"]
    assert http["basic_auth"] == {"username": "alice", "password": "<secret>"}
    assert http["headers"] == {"Authorization": "<secret>", "X-Auth-Token": "<secret>", "Accept": "text/html"}
    assert http["proxy_url"] == "http://proxyuser:<secret>@127.0.0.1:3128/"
    assert doc["modules"]["bearer"]["http"]["bearer_token"] == "<secret>"
    assert doc["services"][0]["checks"][0]["targets"] == ["https://bob@127.0.0.1/"]
    # The loaded config itself is untouched: probes still need the real values.
    assert config.modules["basic"].http.basic_auth.password == "hunter2-basic"


def test_error_messages_mask_url_passwords() -> None:
    text = ("regions: [{name: lab, resolvers: ['127.0.0.1']}]\n"
            "services: [{name: s, checks: [{name: c, module: {prober: http}, target: 'https://u:pw9@[::1/'}]}]\n")
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    assert info.value.path == "services[0].checks[0].target"
    assert info.value.problem.startswith('invalid http target "https://u:<secret>@[::1/": expected')


def test_dump_round_trips(tmp_path: Path) -> None:
    rc = tmp_path / "resolv.conf"
    rc.write_text("nameserver 127.0.0.53\nnameserver 127.0.0.54\n")
    config = load_config(str(TESTDATA / "valid-full.yml"), default_region="test-1", resolv_conf=str(rc))
    text = dump_config(config)
    assert text.startswith(f"# Effective configuration from {config.source} (sha256 {config.checksum})\n")
    assert "# Region eu-west: system = 127.0.0.53:53, system#2 = 127.0.0.54:53\n" in text
    again = load_config_text(text, source=config.source, resolv_conf=str(rc))
    assert again.regions == config.regions
    assert again.modules == config.modules
    assert again.services == config.services
    assert again.defaults == config.defaults


def test_dump_round_trips_blackbox_modules(tmp_path: Path) -> None:
    rc = tmp_path / "resolv.conf"
    rc.write_text("nameserver 127.0.0.53\n")
    config = load_config(str(blackbox_yml(tmp_path / "bb")), default_region="test-1", resolv_conf=str(rc))
    again = load_config_text(dump_config(config), resolv_conf=str(rc))
    for name, module in config.modules.items():
        if name != "http_basic_auth_example":  # its password is masked
            assert again.modules[name] == module, name
