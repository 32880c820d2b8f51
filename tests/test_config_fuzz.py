"""Config loading under hostile input: it returns a Config or raises ConfigError naming where, nothing else.

Hypothesis feeds the loader random YAML documents, random text, a valid config with one known key
replaced by a value of the wrong type (or a huge one, or a deeply nested one), and strings with odd
unicode; hand-written cases cover alias and merge-key bombs and deep nesting. A loaded Config must also
survive what the exporter does next with it (expanding checks, dumping it for /config).
``outage-exporter --config.check`` is run on a few hostile files to check the one-line error and the
exit code users see.
"""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from exporter import checks
from exporter.config import ConfigError, dump_config, load_config_text
from exporter.config.model import Config

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "fuzz.yml"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))  # raise it for a longer hunt
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BASE: dict[str, Any] = {
    "defaults": {"interval": "30s", "timeout": "5s", "concurrency": 16},
    "modules": {
        "http_2xx": {"prober": "http", "timeout": "5s", "http": {
            "valid_status_codes": [200, 301], "valid_http_versions": ["HTTP/1.1"], "method": "GET",
            "headers": {"X-Test": "1"}, "fail_if_ssl": False, "fail_if_body_matches_regexp": ["error"],
            "fail_if_header_matches": [{"header": "Server", "regexp": "bad", "allow_missing": True}],
            "follow_redirects": True, "tls_config": {"insecure_skip_verify": False, "server_name": "www.test"},
            "body_size_limit": "1MB", "preferred_ip_protocol": "ip4", "ip_protocol_fallback": True}},
        "dns_a": {"prober": "dns", "dns": {
            "query_name": "www.test", "query_type": "A", "valid_rcodes": ["NOERROR"], "transport_protocol": "udp",
            "recursion_desired": True, "validate_answer_rrs": {"fail_if_matches_regexp": ["x"]}}},
        "tcp_banner": {"prober": "tcp", "tcp": {
            "tls": False, "query_response": [{"expect": "^220"}, {"send": "QUIT"}]}},
    },
    "regions": [
        {"name": "eu", "resolvers": ["127.0.0.1:5353"], "display_name": "Europe", "latitude": 50.1,
         "longitude": 8.6},
        {"name": "us", "resolvers": ["system"]},
    ],
    "services": [
        {"name": "shop", "provider": "acme", "checks": [
            {"name": "home", "module": "http_2xx", "target": "http://127.0.0.1:8080/", "interval": "10s"},
            {"name": "dns", "module": "dns_a", "query_name": "shop.test", "regions": ["eu"]},
            {"name": "smtp", "module": "tcp_banner", "targets": ["127.0.0.1:25"], "timeout": "2s"},
        ]},
    ],
}


@pytest.fixture(scope="module")
def resolv_conf(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("etc") / "resolv.conf"
    path.write_text("nameserver 127.0.0.1\n")
    return str(path)


# --- The property every input must satisfy ---------------------------------------------------------------
def load(text: str, resolv_conf: str) -> Config | ConfigError:
    """Load ``text``; assert it either gives a usable Config or a well-formed ConfigError."""
    try:
        config = load_config_text(text, source=SOURCE, default_region="fuzz", resolv_conf=resolv_conf)
    except ConfigError as exc:
        assert_well_formed(exc)
        return exc
    assert isinstance(config, Config)
    expanded = checks.expand(config)  # what the scheduler gets
    for check in expanded:
        assert math.isfinite(check.interval) and check.interval > 0
        assert math.isfinite(check.timeout) and 0 < check.timeout <= check.interval
    dump_config(config)  # what /config shows
    return config


def assert_well_formed(exc: ConfigError) -> None:
    message = str(exc)
    assert message.strip(), "empty error message"
    if exc.path:
        assert message.startswith(exc.path + ": "), message
    else:  # a problem with the file as a whole: the message says where in the file
        assert message.startswith((SOURCE, "the configuration must be a mapping", "top-level")), message
    assert len(message) < 4000, f"message of {len(message)} characters"


# --- Strategies ------------------------------------------------------------------------------------------
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**18, max_value=10**120),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.sampled_from(["", " ", "0", "-1", "1e999", "99999999999999999999999y", "1h1h", "5", "NaN", "~",
                     "\u202e", "\U0001f4a5", "a\x00b", "\ufeff", "1.5s", "http://", "[::1]:99999", "*",
                     "x" * 100_000]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)), max_leaves=20)


def key_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every mapping key / list index path in ``node`` (intermediate ones too)."""
    out = []
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return out
    for key, child in items:
        out.append((*prefix, key))
        out.extend(key_paths(child, (*prefix, key)))
    return out


PATHS = key_paths(BASE)


def replaced(doc: dict, path: tuple, value: Any) -> dict:
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


# --- Properties ------------------------------------------------------------------------------------------
def test_base_config_loads(resolv_conf: str) -> None:
    assert isinstance(load(dump(BASE), resolv_conf), Config)


@FUZZ
@given(path=st.sampled_from(PATHS), value=values)
def test_any_value_at_any_known_key(resolv_conf: str, path: tuple, value: Any) -> None:
    result = load(dump(replaced(BASE, path, value)), resolv_conf)
    if isinstance(result, ConfigError):
        assert result.path, f"a bad value at {path} gave a file-level error: {result}"


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(["defaults", "modules", "regions", "services", "probe", "junk"]),
                           values, max_size=5))
def test_random_documents(resolv_conf: str, doc: dict) -> None:
    load(dump(doc), resolv_conf)


@FUZZ
@given(text=st.text(max_size=300))
def test_random_text(resolv_conf: str, text: str) -> None:
    load(text, resolv_conf)


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list("{}[]:,-&*!|>'\"#%@` \n\tab1<?")), max_size=200))
def test_yaml_punctuation_soup(resolv_conf: str, text: str) -> None:
    load(text, resolv_conf)


@FUZZ
@given(name=st.text(min_size=1, max_size=30), target=st.text(max_size=60))
def test_odd_unicode_in_names_and_targets(resolv_conf: str, name: str, target: str) -> None:
    doc = replaced(replaced(BASE, ("services", 0, "name"), name), ("services", 0, "checks", 0, "target"), target)
    try:
        text = dump(doc)
    except yaml.YAMLError:
        assume(False)  # PyYAML cannot even write it
    load(text, resolv_conf)


def test_lone_surrogates_are_a_config_error(resolv_conf: str) -> None:
    result = load("services:\n  - name: \udcff\n", resolv_conf)
    assert isinstance(result, ConfigError) and "UTF-8" in str(result)


# --- Bombs and giants --------------------------------------------------------------------------------------
def alias_bomb(levels: int = 10, width: int = 10) -> str:
    lines = [f"  a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "modules:\n" + "\n".join(lines) + f"\nservices: *a{levels - 1}\n"


def merge_bomb(levels: int = 30) -> str:
    lines = ["  m0: &m0 {k0: 1}"]
    lines += [f"  m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: 1}}" for i in range(1, levels)]
    return "modules:\n" + "\n".join(lines) + "\n"


HOSTILE_DOCS = {
    "alias bomb": alias_bomb(),
    "merge-key bomb": merge_bomb(),
    "deeply nested lists": "services: " + "[" * 20_000 + "]" * 20_000 + "\n",
    "deeply nested mappings": "services: " + "{a: " * 3_000 + "1" + "}" * 3_000 + "\n",
    "huge integer": "defaults: {concurrency: " + "9" * 5_000 + "}\n",
    "huge duration": "defaults: {interval: " + "9" * 400 + "s}\n",
    "huge string": "services: [{name: " + "x" * 2_000_000 + "}]\n",
    "huge list": "regions: [" + ", ".join(f"{{name: r{i}}}" for i in range(5_000)) + "]\n",
    "many anchors": "".join(f"x{i}: &a{i} 1\n" for i in range(20_000)),
    "binary junk": "\x00\x01\x02\x7f",
    "control character": "services: []\x1f\n",
    "impossible date": "defaults: {interval: 2021-13-45}\n",
    "null key at the top": "?\n",
    "tags": "!!python/object:os.system {}\n",
    "unknown tag": "services: !secret foo\n",
}


@pytest.mark.parametrize("text", HOSTILE_DOCS.values(), ids=list(HOSTILE_DOCS))
def test_hostile_documents_fail_fast_and_cleanly(resolv_conf: str, text: str) -> None:
    started = time.monotonic()
    result = load(text, resolv_conf)
    assert time.monotonic() - started < 5.0
    assert isinstance(result, ConfigError), "a hostile document loaded"


def test_merge_keys_still_work(resolv_conf: str) -> None:
    text = dump(BASE) + "x-unused: 1\n"
    assert isinstance(load(text, resolv_conf), ConfigError)  # unknown keys are still refused
    text = ("modules:\n  base: &base {prober: http, timeout: 3s}\n  web: {<<: *base}\n")
    config = load(text, resolv_conf)
    assert isinstance(config, Config) and config.modules["web"].timeout == 3.0


# --- What users see ----------------------------------------------------------------------------------------
CLI_CASES = {
    "merge-key bomb": (merge_bomb(), "merge keys expand"),
    "wrong type": ("defaults: {interval: [1, 2]}\n", "defaults.interval: expected a duration"),
    "huge duration": ("defaults: {interval: " + "9" * 400 + "s}\n", "defaults.interval:"),
    "not yaml": ("services: [unclosed\n", "invalid YAML"),
    "not utf-8": (b"services: \xff\xfe\n", "not valid UTF-8"),
}


@pytest.mark.parametrize(("content", "expected"), CLI_CASES.values(), ids=list(CLI_CASES))
def test_config_check_prints_one_clear_line(tmp_path: Path, content: str | bytes, expected: str) -> None:
    path = tmp_path / "hostile.yml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    proc = subprocess.run([sys.executable, "-m", "exporter", "--config.file", str(path), "--config.check"],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0] and "Traceback" not in proc.stderr
    assert proc.stdout == ""
