"""Reading a config file: only bounded regular files, one YAML document, no duplicate keys, bounded aliases."""

from __future__ import annotations

import os
import re
import tracemalloc
from pathlib import Path

import pytest

from exporter.config import ConfigError, load_config, load_config_text, reading
from tests.helpers.configfiles import TESTDATA, amplified, config_check, one_line_error

pytestmark = pytest.mark.usefixtures("yaml_loader")


# --- Bounded reading ------------------------------------------------------------------------------------


def bad_paths(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """name -> (path, expected problem)."""
    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)
    big = tmp_path / "big.yml"
    big.write_bytes(b"#" * 2048)
    loop = tmp_path / "loop.yml"
    loop.symlink_to(loop)
    return {
        "fifo": (str(fifo), "not a regular file (a named pipe)"),
        "dev-zero": ("/dev/zero", "not a regular file (a character device)"),
        "directory": (str(tmp_path), "not a regular file (a directory)"),
        "oversized": (str(big), "larger than the limit of 1 KiB"),
        "symlink loop": (str(loop), "Too many levels of symbolic links"),
    }


@pytest.mark.parametrize("name", ["fifo", "dev-zero", "directory", "oversized", "symlink loop"])
def test_only_bounded_regular_files_are_read(tmp_path: Path, name: str) -> None:
    path, problem = bad_paths(tmp_path)[name]
    with pytest.raises(ConfigError) as info:
        load_config(path, max_bytes=1024, resolv_conf=str(tmp_path / "none"))
    assert str(info.value) == f"cannot read config file {path}: {problem}"


def test_a_file_growing_past_the_limit_is_refused(tmp_path: Path) -> None:
    """/proc files report size 0: the cap holds on what is read, not only on fstat."""
    with pytest.raises(ConfigError, match=r"larger than the limit of 10 bytes"):
        load_config("/proc/self/status", max_bytes=10)
    assert reading.read_bounded("/proc/self/status", 1 << 20)


@pytest.mark.parametrize("name", ["fifo", "dev-zero", "directory", "oversized"])
def test_config_check_names_the_path_in_one_line(tmp_path: Path, name: str, yaml_loader: str) -> None:
    if yaml_loader != "python":
        pytest.skip("a subprocess: once is enough")
    path, problem = bad_paths(tmp_path)[name]
    line = one_line_error(config_check(path, "--config.max-size", "1KiB"))
    assert line.endswith(f"cannot read config file {path}: {problem}")


# --- The YAML document ----------------------------------------------------------------------------------


def test_file_problems_have_no_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    with pytest.raises(ConfigError) as info:
        load_config(str(missing))
    assert info.value.path == ""
    assert str(info.value) == f"cannot read config file {missing}: No such file or directory"

    binary = tmp_path / "binary.yml"
    binary.write_bytes(b"modules: {}\n\xff\xfe")
    with pytest.raises(ConfigError, match=r"binary\.yml: not valid UTF-8 \(at byte 12\)$"):
        load_config(str(binary))

    with pytest.raises(ConfigError) as info:
        load_config_text("a: 1\n---\nb: 2\n")
    assert str(info.value) == ("<string>:2:1: invalid YAML: but found another document "
                               "(expected a single document in the stream)")


def test_absurdly_nested_yaml_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text("modules: " + "[" * 5000 + "]" * 5000)
    assert str(info.value) == "<string>: invalid YAML: nested too deeply"


def test_duplicate_yaml_keys_are_found_at_any_depth() -> None:
    text = "modules:\n  web:\n    prober: http\n    http:\n      method: GET\n      method: POST\n"
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    assert info.value.path == "modules.web.http.method"
    assert info.value.problem == 'duplicate key "method" (line 6, first defined on line 5)'


def test_anchors_and_merge_keys(resolv_conf: str) -> None:
    modules = load_config(str(TESTDATA / "valid-anchors.yml"), resolv_conf=resolv_conf).modules
    assert (modules["base"].timeout, modules["slower"].timeout) == (3.0, 9.0)
    assert modules["slower"].prober == "http"


# --- Amplification --------------------------------------------------------------------------------------


def test_alias_bomb_is_refused_before_memory_is_spent() -> None:
    text = amplified(1000, 1000)  # 1,000,000 checks
    assert len(text) < 64 * 1024  # about 54 KB
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as info:
            load_config_text(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert re.fullmatch(r"services\[\d+\]\.checks: aliases expand the document by more than 1000000 nodes "
                        r"\(each alias counts as a copy of what it names\)", str(info.value)), info.value
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB"
