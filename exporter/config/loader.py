"""Load and validate the configuration file (a superset of blackbox.yml) into the dataclasses of model.py.

Validation approach
    The text is parsed by a SafeLoader subclass that refuses duplicate mapping keys (plain PyYAML keeps
    the last one silently). The resulting plain data is then read top-down by small functions, one per
    schema mapping, each going through :class:`_Section`: a section knows its allowed keys, so an
    unknown key fails at once with the allowed list and the closest match, and every value is converted
    by a parser that receives the value and its YAML path (``services[2].checks[0].module``) and raises
    :class:`ConfigError` naming that path. Loading stops at the first error. The order is fixed: unknown
    top-level keys, then ``defaults``, ``modules``, ``regions``, ``services``; lists in file order and the
    keys of each mapping in schema order, so a given file always reports the same error.

    Everything a probe needs is converted here, once, never on the probe path: durations to seconds,
    regexes compiled (body and ``expect`` regexes as bytes patterns), DNS type/class/rcode names checked
    against dnspython, resolver addresses parsed with :func:`exporter.checks.parse_dns_server`.

blackbox.yml keys
    Module keys mirror blackbox_exporter (http, dns and tcp probers). Known blackbox keys fall in three
    groups. Implemented ones are in model.py; the deprecated ``no_follow_redirects`` is read as the
    inverse of ``follow_redirects``. Keys that only tune behaviour outage-exporter does not have are
    accepted and ignored, with a debug log line: ``http.enable_http2`` (the HTTP prober speaks
    HTTP/1.1), ``http.skip_resolve_phase_with_proxy``, ``query_response[].labels``. Keys whose silent
    omission would change what is probed or how it authenticates (``oauth2``, ``authorization``,
    ``body_file``, CEL body matchers, proxy environment settings, inline TLS keys, ``max_version`` ...)
    are refused as not supported. Anything else is an unknown key. ``prober: icmp`` and ``grpc`` (or an
    ``icmp:``/``grpc:`` section) are refused at the module's path.

Regions and resolvers
    ``system`` in a region's resolvers expands to the nameservers of resolv.conf (read once per load).
    Each becomes its own Resolver: the first is named ``system``, the next ``system#2``, ``system#3``
    and so on, because resolver names are label values and must be unique within a region.

    One region may omit ``name``: it takes the local region name (``default_region``, else
    :func:`default_region_name`). The embedded default config relies on this, so one file serves every
    probing host. Without a ``regions:`` section there is one implicit local region using ``system``; if
    resolv.conf is unusable and there are no services, that region simply has no resolvers, so a plain
    blackbox.yml (modules only, used through ``/probe``) loads on any host.

Checks
    A check has either ``module`` (with targets or a query name) or ``authoritative`` (a zone whose
    nameservers are asked directly; keys such as ``targets`` and ``two_path`` do not apply to it).
    ``two_path`` only applies to http checks.

    ``interval`` defaults to ``defaults.interval``. ``timeout`` defaults to ``defaults.timeout`` capped
    at the check's interval; an explicit timeout longer than the interval is an error. A module's own
    ``timeout`` stays on the module; :func:`exporter.checks.expand` uses the smaller of the two.
"""

from __future__ import annotations

import difflib
import functools
import gc
import hashlib
import importlib.resources
import ipaddress
import json
import logging
import os
import re
import socket
import stat
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, TypeVar

import dns.exception
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import yaml

from exporter import checks
from exporter.config.durations import format_duration, parse_duration, parse_size
from exporter.config.model import (
    AUTHORITATIVE_MODULE,
    AuthoritativeCheck,
    BasicAuth,
    CheckConfig,
    Config,
    Defaults,
    DNSProbe,
    HeaderMatch,
    HTTPProbe,
    Module,
    QueryResponse,
    Region,
    Resolver,
    RoutingConfig,
    RRValidator,
    Service,
    StaticNameserver,
    TCPProbe,
    TLSConfig,
    TwoPath,
    VantagePolicy,
)
from exporter.config.probe_policy import ProbePolicy, parse_probe_policy

log = logging.getLogger(__name__)

T = TypeVar("T")
Parser = Callable[[Any, str], T]

PROBERS: tuple[str, ...] = ("dns", "http", "tcp")
UNSUPPORTED_PROBERS: tuple[str, ...] = ("icmp", "grpc")
SECRET = "<secret>"
EMBEDDED_SOURCE = "<embedded>"
DEFAULT_RESOLV_CONF = "/etc/resolv.conf"
MAX_CONFIG_BYTES = 64 * 1024 * 1024  # default --config.max-size: far above any real config (20k checks ~ 2.4 MB)


class ConfigError(Exception):
    """A configuration problem, located by its YAML path (``""`` for problems with the file itself)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


# --- Public entry points ---------------------------------------------------------------------------------


def load_config(
    path: str | os.PathLike[str] | None,
    *,
    default_region: str | None = None,
    resolv_conf: str = DEFAULT_RESOLV_CONF,
    max_bytes: int = MAX_CONFIG_BYTES,
) -> Config:
    """Load a config file; ``None`` loads the embedded default config (package data ``default.yaml``).

    The file is read with :func:`read_bounded`: only a regular file of at most ``max_bytes``.
    """
    if path is None:
        data = importlib.resources.files("exporter.config").joinpath("default.yaml").read_bytes()
        source = EMBEDDED_SOURCE
    else:
        source = os.fspath(path)
        try:
            data = read_bounded(source, max_bytes)
        except OSError as e:
            raise ConfigError("", f"cannot read config file {source}: {e.strerror or e}") from None
    return _load_bytes(data, source, default_region, resolv_conf)


def load_config_text(
    text: str,
    *,
    source: str = "<string>",
    default_region: str | None = None,
    resolv_conf: str = DEFAULT_RESOLV_CONF,
) -> Config:
    """Load a config from a string (``source`` names it in messages and in ``Config.source``)."""
    # surrogatepass: a lone surrogate (never valid UTF-8) then fails decoding with a ConfigError
    return _load_bytes(text.encode("utf-8", "surrogatepass"), source, default_region, resolv_conf)


def default_region_name() -> str:
    """The local region name: the short host name, lowercased, other than ``[a-z0-9-]`` turned to ``-``."""
    try:
        host = socket.gethostname()
    except OSError:
        host = ""
    short = host.split(".", 1)[0].lower()
    return re.sub(r"[^a-z0-9-]", "-", short).strip("-") or "local"


def parse_resolv_conf(text: str) -> tuple[str, ...]:
    """The ``nameserver`` addresses of a resolv.conf, in order. Invalid entries are skipped, as libc does."""
    servers = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "nameserver":
            continue
        try:
            ipaddress.ip_address(words[1])
        except ValueError:
            continue
        servers.append(words[1])
    return tuple(servers)


def system_resolvers(resolv_conf: str = DEFAULT_RESOLV_CONF) -> tuple[Resolver, ...]:
    """The resolvers ``system`` stands for. Raises ValueError saying why when resolv.conf is unusable."""
    try:
        with open(resolv_conf, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f"cannot read {resolv_conf}: {e.strerror or e}") from None
    servers = parse_resolv_conf(text)
    if not servers:
        raise ValueError(f"no nameserver in {resolv_conf}")
    return tuple(
        Resolver(name="system" if i == 0 else f"system#{i + 1}", host=host, port=53)
        for i, host in enumerate(servers)
    )


def _load_bytes(data: bytes, source: str, default_region: str | None, resolv_conf: str) -> Config:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError("", f"{source}: not valid UTF-8 (at byte {e.start})") from None
    with GC_PAUSE:
        doc = _parse_yaml(text, source)
        config = _build(doc, default_region or default_region_name(), _SystemResolvers(resolv_conf))
    _check_referenced_files(config)
    return replace(config, source=source, checksum=hashlib.sha256(data).hexdigest())


# --- Files -----------------------------------------------------------------------------------------------

_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class NotRegularFile(OSError):
    """A path that names a directory, pipe, device or socket: reading it could block or never end."""

    def __init__(self, st: os.stat_result) -> None:
        kind = next((name for test, name in _FILE_KINDS if test(st.st_mode)), "a special file")
        super().__init__(f"not a regular file ({kind})")


class FileTooLarge(OSError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than the limit of {_format_size(limit)}")


def _format_size(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def open_regular(path: str) -> int:
    """A read-only descriptor of ``path``, refused (NotRegularFile) unless it is a regular file.

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer; the type is checked
    on the opened descriptor, so a path swapped after a check cannot slip a device in.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(st)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bounded(path: str, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; OSError (with a strerror-like text) if not."""
    fd = open_regular(path)
    try:
        if os.fstat(fd).st_size > limit:
            raise FileTooLarge(limit)
        chunks, total = [], 0
        while total <= limit:  # the file may grow after fstat: never read more than limit + 1 bytes
            chunk = os.read(fd, min(limit + 1 - total, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    if total > limit:
        raise FileTooLarge(limit)
    return b"".join(chunks)


def check_readable(path: str) -> None:
    """Raise OSError unless ``path`` is a regular file this process can open for reading."""
    os.close(open_regular(path))


class _GCPause:
    """Pauses the cyclic garbage collector while a config is parsed and built (re-entrant, thread-safe).

    A config of 20,000 checks makes a few hundred thousand objects in a burst and nothing garbage; the
    collector would rescan them all again and again, several times the cost of the parse itself.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._holders += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0 and self._was_enabled:
                gc.enable()


GC_PAUSE = _GCPause()


@dataclass(frozen=True, slots=True)
class ReferencedFile:
    """A file a module names (CA, client certificate and key, password or token file)."""

    module: str  # the module's name; an inline module is named "service/check"
    path: str  # YAML path of the key naming it
    file: str


def referenced_files(config: Config) -> tuple[ReferencedFile, ...]:
    """Every file the config's modules name, each module once (named modules first), in file order."""
    out: list[ReferencedFile] = []
    seen: set[int] = set()

    def add(module: Module, path: Callable[[], str]) -> None:
        if id(module) in seen or module.prober not in PROBERS:
            return
        seen.add(id(module))
        section = _child(path(), module.prober)
        out.extend(ReferencedFile(module.name, p, f) for p, f in _files_in(getattr(module, module.prober), section))

    for name, module in config.modules.items():
        add(module, lambda: _child("modules", name))  # noqa: B023 - called before the loop moves on
    for i, service in enumerate(config.services):
        for j, cc in enumerate(service.checks):
            add(cc.module, lambda: f"services[{i}].checks[{j}].module")  # noqa: B023
    return tuple(out)


def _files_in(value: Any, path: str) -> Iterable[tuple[str, str]]:
    """(YAML path, file) for every ``*_file`` field set in a module section, nested sections included."""
    for f in fields(value):
        v = getattr(value, f.name)
        if f.name.endswith("_file") and isinstance(v, str):
            yield _child(path, f.name), v
        elif is_dataclass(v):
            yield from _files_in(v, _child(path, f.name))


def _check_referenced_files(config: Config) -> None:
    """A secret or CA that is not mounted is the config's problem: say so now, not as a failing target."""
    for ref in referenced_files(config):
        try:
            check_readable(ref.file)
        except OSError as e:
            raise ConfigError(ref.path, f"cannot read {ref.file}: {e.strerror or e}") from None


# --- YAML ------------------------------------------------------------------------------------------------


MAX_DURATION = 10 * 365 * 86400.0  # seconds; anything longer is a typo, and infinity breaks the scheduler
MAX_MERGED_KEYS = 10_000  # entries one mapping may gather through merge keys (``<<: *anchor``)
MAX_ALIASED_NODES = 1_000_000  # nodes aliases may add to the document, each alias counted as a copy


class _StrictConstruction:
    """Refuses duplicate mapping keys (naming their YAML path and lines) and bounds what aliases expand to.

    Merge keys are bounded: PyYAML copies merged entries into each mapping, so mappings that merge an
    alias twice, level upon level, double in size at every level (a "billion laughs" that would take
    all memory). Aliases share one object, but whatever walks the data later (the checks built from it)
    visits a shared part once per alias, so the nodes they add are counted too (MAX_ALIASED_NODES).

    Mixed into the libyaml-based loader and the pure-Python one; both build the same nodes.
    """

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        super().flatten_mapping(node)  # type: ignore[misc]  # recurses through here: each level is bounded
        if len(node.value) > MAX_MERGED_KEYS:
            raise yaml.constructor.ConstructorError(
                None, None, f"merge keys expand this mapping to more than {MAX_MERGED_KEYS} entries",
                node.start_mark)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """Scalars PyYAML cannot convert (an integer of thousands of digits, a timestamp such as
        2021-13-45) raise plain ValueError there; report them at their line like any YAML error."""
        try:
            return super().construct_object(node, deep)  # type: ignore[misc]
        except (ValueError, OverflowError) as e:
            problem = "integer too long" if "integer string conversion" in str(e) else f"invalid value ({e})"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None

    def load_checked(self) -> Any:
        root = self.get_single_node()  # type: ignore[attr-defined]
        if root is None:
            return None
        _NodeCheck().visit(root, None)
        return _Builder(self).build(root)


class _PyStrictLoader(_StrictConstruction, yaml.SafeLoader):
    """Pure-Python parser: the reference for syntax error messages."""


_CSafeLoader = getattr(yaml, "CSafeLoader", None)


def _libyaml_ok() -> bool:
    """libyaml 0.2.5 limits nesting (1,000 levels); PyYAML's C composer recurses without a limit of its own."""
    if _CSafeLoader is None:
        return False
    try:
        from yaml import _yaml  # type: ignore[attr-defined]

        return tuple(_yaml.get_version()) >= (0, 2, 5)
    except (ImportError, AttributeError, TypeError):
        return False


YAML_LOADERS: dict[str, type] = {"python": _PyStrictLoader}
if _libyaml_ok():
    class _CStrictLoader(_StrictConstruction, _CSafeLoader):  # type: ignore[misc, valid-type]
        """libyaml's parser (many times faster); the construction rules are the same Python code."""

    YAML_LOADERS = {"libyaml": _CStrictLoader, **YAML_LOADERS}
YAML_LOADER: type = next(iter(YAML_LOADERS.values()))  # the fastest available


_Where = tuple[Any, str | int] | None  # (parent, key or index): a YAML path, rendered only for a message
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG, _SEQ_TAG, _MAP_TAG = "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"


def _render(where: _Where) -> str:
    parts: list[str | int] = []
    while where is not None:
        where, key = where
        parts.append(key)
    path = ""
    for key in reversed(parts):
        path = _index(path, key) if isinstance(key, int) else _child(path, key)
    return path


class _NodeCheck:
    """One walk over the node graph: duplicate keys, and the nodes aliases add (see _StrictConstruction)."""

    def __init__(self) -> None:
        self.sizes: dict[int, int] = {}  # id(node) -> nodes it stands for, aliases expanded
        self.aliased = 0

    def visit(self, node: yaml.Node, where: _Where, merged: bool = False) -> int:
        size = self.sizes.get(id(node))
        if size is not None:  # an alias (or a cycle, counted once): a copy of the whole node
            self.aliased += size
            if self.aliased > MAX_ALIASED_NODES:
                what = "merge keys expand" if merged else "aliases expand"
                raise ConfigError(_render(where), f"{what} the document by more than {MAX_ALIASED_NODES} "
                                                  "nodes (each alias counts as a copy of what it names)")
            return size
        self.sizes[id(node)] = 1
        size = 1
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                size += self.visit(item, (where, i), merged)
        elif isinstance(node, yaml.MappingNode):
            size += self._mapping(node, where, merged)
        self.sizes[id(node)] = size
        return size

    def _mapping(self, node: yaml.MappingNode, where: _Where, merged: bool) -> int:
        size = 0
        first: dict[str, yaml.Mark] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                size += 1 + self.visit(value_node, where, merged or key_node.tag == _MERGE_TAG)
                continue
            key = key_node.value
            if key in first:
                mark = key_node.start_mark
                raise ConfigError(_render((where, key)), f'duplicate key "{key}" (line {mark.line + 1}, '
                                                         f"first defined on line {first[key].line + 1})")
            first[key] = key_node.start_mark
            size += 1 + self.visit(value_node, (where, key), merged)
        return size


class _Builder:
    """Nodes to Python data, as SafeConstructor builds it, with a fast path for strings, lists and mappings.

    Those make up nearly all of a config; anything else (numbers, booleans, null, timestamps, other tags
    and their errors) goes through the constructor itself. Aliases give the same object, cycles included.
    """

    def __init__(self, constructor: Any) -> None:
        self.constructor = constructor
        self.made: dict[int, Any] = {}

    def build(self, node: yaml.Node) -> Any:
        made = self.made.get(id(node), _MISSING)
        if made is not _MISSING:
            return made
        tag = node.tag
        if tag == _STR_TAG and isinstance(node, yaml.ScalarNode):
            return node.value
        if tag == _SEQ_TAG and isinstance(node, yaml.SequenceNode):
            items: list[Any] = []
            self.made[id(node)] = items  # before the items: a sequence may contain itself
            items.extend([self.build(item) for item in node.value])
            return items
        if tag == _MAP_TAG and isinstance(node, yaml.MappingNode):
            mapping: dict[Any, Any] = {}
            self.made[id(node)] = mapping
            self._fill(node, mapping)
            return mapping
        value = self.constructor.construct_object(node, deep=True)
        self.made[id(node)] = value
        return value

    def _fill(self, node: yaml.MappingNode, mapping: dict[Any, Any]) -> None:
        self.constructor.flatten_mapping(node)  # merge keys, bounded by MAX_MERGED_KEYS
        for key_node, value_node in node.value:
            key = self.build(key_node)
            if type(key) is not str:
                try:
                    hash(key)
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark, "found unhashable key",
                        key_node.start_mark) from None
            mapping[key] = self.build(value_node)


_MISSING = object()


class _SyntaxProblem(ConfigError):
    """The YAML itself could not be read (as opposed to a rule of ours refusing it)."""


def _parse_yaml(text: str, source: str) -> Any:
    """The document's data. A syntax error found by libyaml is reported as the pure-Python parser words it,
    so messages are the same whichever parser is installed."""
    try:
        return _parse_with(YAML_LOADER, text, source)
    except _SyntaxProblem as fast:
        if YAML_LOADER is _PyStrictLoader:
            raise ConfigError(fast.path, fast.problem) from None
        try:
            _parse_with(_PyStrictLoader, text, source)
        except ConfigError as reference:
            raise ConfigError(reference.path, reference.problem) from None
        raise ConfigError(fast.path, fast.problem) from None  # only libyaml refuses it (its nesting limit)


def _parse_with(loader_class: type, text: str, source: str) -> Any:
    try:  # the pure-Python reader refuses control characters as soon as it is built
        loader = loader_class(text)
    except yaml.reader.ReaderError as e:
        raise _SyntaxProblem("", f"{source}: invalid YAML: {_reader_problem(e)}") from None
    try:
        return loader.load_checked()
    except yaml.reader.ReaderError as e:
        raise _SyntaxProblem("", f"{source}: invalid YAML: {_reader_problem(e)}") from None
    except yaml.constructor.ConstructorError as e:
        raise ConfigError("", _marked_problem(e, source)) from None
    except yaml.MarkedYAMLError as e:
        raise _SyntaxProblem("", _marked_problem(e, source)) from None
    except yaml.YAMLError as e:
        raise _SyntaxProblem("", f"{source}: invalid YAML: {e}") from None
    except RecursionError:
        raise _SyntaxProblem("", f"{source}: invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()


def _marked_problem(e: yaml.MarkedYAMLError, source: str) -> str:
    mark = e.problem_mark or e.context_mark
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
    problem = e.problem or e.context or "syntax error"
    context = f" ({e.context})" if e.problem and e.context else ""
    return f"{where}: invalid YAML: {problem}{context}"


def _reader_problem(e: yaml.reader.ReaderError) -> str:
    """PyYAML's reader message spans two lines; users get one."""
    if isinstance(e.character, int):
        return f"character #x{e.character:04x} at position {e.position} is not allowed ({e.reason})"
    return f"cannot decode the text at position {e.position} ({e.reason})"


# --- Paths, types and generic parsers --------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _child(path: str, key: str) -> str:
    if not _PLAIN_KEY.fullmatch(key):
        return f"{path}[{json.dumps(key)}]"
    return f"{path}.{key}" if path else key


def _index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def _kind(value: object) -> str:
    if value is None:
        return "null"
    for t, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
                    (list, "a list"), (dict, "a mapping")):
        if isinstance(value, t):
            return name
    return f"a {type(value).__name__}"


def _expected(value: object, path: str, what: str) -> ConfigError:
    return ConfigError(path, f"expected {what}, got {_kind(value)}")


def _quoted(options: Iterable[str]) -> str:
    return ", ".join(f'"{o}"' for o in options)


def _str(v: Any, p: str) -> str:
    if isinstance(v, str):
        return v
    hint = " (put it in quotes)" if isinstance(v, (bool, int, float)) else ""
    raise ConfigError(p, f"expected a string, got {_kind(v)}{hint}")


def _nonempty(v: Any, p: str) -> str:
    s = _str(v, p)
    if not s.strip():
        raise ConfigError(p, "must not be empty")
    return s


def _name(v: Any, p: str) -> str:
    s = _nonempty(v, p)
    if s != s.strip():
        raise ConfigError(p, f'"{s}" must not start or end with whitespace')
    return s


def _bool(v: Any, p: str) -> bool:
    if isinstance(v, bool):
        return v
    raise _expected(v, p, "true or false")


def _int(v: Any, p: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    raise _expected(v, p, "an integer")


def _positive_int(v: Any, p: str) -> int:
    n = _int(v, p)
    if n < 1:
        raise ConfigError(p, f"must be at least 1, got {n}")
    return n


def _number(v: Any, p: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    raise _expected(v, p, "a number")


def _duration(v: Any, p: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        raise ConfigError(p, f'durations need a unit, e.g. "15s" (got {v})')
    if not isinstance(v, str):
        raise _expected(v, p, 'a duration such as "15s"')
    try:
        seconds = parse_duration(v)
    except ValueError as e:
        raise ConfigError(p, str(e)) from None
    if not seconds <= MAX_DURATION:  # also catches inf: "9999...9s" overflows a float
        raise ConfigError(p, f'duration "{_cut(v)}" is longer than the maximum of {format_duration(MAX_DURATION)}')
    return seconds


def _cut(text: str, limit: int = 60) -> str:
    """A value quoted in a message, cut short: the message must stay one readable line."""
    return text if len(text) <= limit else text[:limit] + "..."


def _size(v: Any, p: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        if v < 0:
            raise ConfigError(p, f"must not be negative, got {v}")
        return v
    if not isinstance(v, str):
        raise _expected(v, p, 'a size such as "10MB" or a number of bytes')
    try:
        return parse_size(v)
    except ValueError as e:
        raise ConfigError(p, str(e)) from None


def _items(v: Any, p: str) -> list[Any]:
    if isinstance(v, list):
        return v
    raise _expected(v, p, "a list")


def _list_of(item: Parser[T]) -> Parser[tuple[T, ...]]:
    def parse(v: Any, p: str) -> tuple[T, ...]:
        return tuple(item(x, _index(p, i)) for i, x in enumerate(_items(v, p)))

    return parse


def _choice(options: tuple[str, ...]) -> Parser[str]:
    def parse(v: Any, p: str) -> str:
        s = _str(v, p)
        if s not in options:
            raise ConfigError(p, f'invalid value "{s}" (allowed: {_quoted(options)})')
        return s

    return parse


_ip_protocol = _choice(("ip4", "ip6"))


def _regex(v: Any, p: str) -> re.Pattern[str]:
    s = _str(v, p)
    try:
        return re.compile(s)
    except re.error as e:
        raise ConfigError(p, f'invalid regular expression "{s}": {e}') from None


def _bytes_regex(v: Any, p: str) -> re.Pattern[bytes]:
    s = _str(v, p)
    try:
        return re.compile(s.encode("utf-8"))
    except re.error as e:
        raise ConfigError(p, f'invalid regular expression "{s}": {e}') from None


def _ip(v: Any, p: str) -> str:
    s = _str(v, p)
    try:
        ipaddress.ip_address(s)
    except ValueError:
        raise ConfigError(p, f'invalid IP address "{s}"') from None
    return s


def _short(value: object) -> str:
    """``repr`` for messages, cut short: a key may be a huge (aliased) structure."""
    return _cut(repr(value))


def _unknown_key(key: str, allowed: Iterable[str]) -> str:
    allowed = sorted(allowed)
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f'; did you mean "{close[0]}"?' if close else ""
    return f'unknown key "{key}"{hint} (allowed: {", ".join(allowed)})'


class _Section:
    """One YAML mapping being read: keys checked up front, then typed values handed out with their paths.

    ``ignored`` are known blackbox keys accepted without effect; ``unsupported`` are known blackbox keys
    refused with a message saying so rather than "unknown key".
    """

    def __init__(self, raw: Any, path: str, keys: Iterable[str], *,
                 ignored: Iterable[str] = (), unsupported: Iterable[str] = ()) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise _expected(raw, path, "a mapping")
        self.raw: dict[str, Any] = raw
        self.path = path
        keys = tuple(keys)
        for key in raw:
            if not isinstance(key, str):
                where = "" if path else "top-level "  # the root has no path of its own to name
                raise ConfigError(path, f"{where}keys must be strings, got {_kind(key)} ({_short(key)})")
            if key in keys:
                continue
            if key in unsupported:
                raise ConfigError(self.path_of(key), f'blackbox_exporter option "{key}" '
                                                     "is not supported by outage-exporter")
            if key not in ignored:
                raise ConfigError(self.path_of(key), _unknown_key(key, keys))
            log.debug("%s: blackbox_exporter option accepted and ignored", self.path_of(key))

    def path_of(self, key: str) -> str:
        return _child(self.path, key)

    def has(self, key: str) -> bool:
        """Whether ``key`` has a value: ``key:`` with nothing after it means "use the default"."""
        return self.raw.get(key) is not None

    def get(self, key: str, parse: Parser[T], default: T) -> T:
        value = self.raw.get(key)
        return default if value is None else parse(value, self.path_of(key))

    def require(self, key: str, parse: Parser[T]) -> T:
        if not self.has(key):
            raise ConfigError(self.path, f'missing required key "{key}"')
        return parse(self.raw[key], self.path_of(key))


class _Names:
    """Rejects a name already used in the same scope, pointing at its first use."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.first: dict[str, str] = {}

    def add(self, name: str, path: str) -> None:
        if name in self.first:
            raise ConfigError(path, f'duplicate {self.what} "{name}" (already used at {self.first[name]})')
        self.first[name] = path


# --- Modules ---------------------------------------------------------------------------------------------

_MODULE_KEYS = ("prober", "timeout", "http", "dns", "tcp")

_HTTP_KEYS = (
    "valid_status_codes", "valid_http_versions", "method", "headers", "body", "fail_if_ssl",
    "fail_if_not_ssl", "fail_if_body_matches_regexp", "fail_if_body_not_matches_regexp",
    "fail_if_header_matches", "fail_if_header_not_matches", "follow_redirects", "no_follow_redirects",
    "tls_config", "basic_auth", "bearer_token", "bearer_token_file", "proxy_url", "body_size_limit",
    "compression", "preferred_ip_protocol", "ip_protocol_fallback",
)
_HTTP_IGNORED = ("enable_http2", "skip_resolve_phase_with_proxy")
_HTTP_UNSUPPORTED = (
    "body_file", "fail_if_body_json_matches_cel", "fail_if_body_json_not_matches_cel", "oauth2",
    "authorization", "no_proxy", "proxy_from_environment", "proxy_connect_header", "http_headers",
    "use_proxy_dns",
)
_TLS_KEYS = ("insecure_skip_verify", "ca_file", "cert_file", "key_file", "server_name", "min_version")
_TLS_UNSUPPORTED = ("ca", "cert", "key", "ca_ref", "cert_ref", "key_ref", "max_version")
_TLS_VERSIONS = ("TLS10", "TLS11", "TLS12", "TLS13")
_BASIC_AUTH_KEYS = ("username", "password", "password_file")
_BASIC_AUTH_UNSUPPORTED = ("username_file", "username_ref", "password_ref")
_HEADER_MATCH_KEYS = ("header", "regexp", "allow_missing")
_COMPRESSIONS = ("", "gzip", "br", "deflate", "identity")
_DNS_KEYS = (
    "query_name", "query_type", "query_class", "recursion_desired", "valid_rcodes", "transport_protocol",
    "preferred_ip_protocol", "ip_protocol_fallback", "source_ip_address", "dns_over_tls", "tls_config",
    "validate_answer_rrs", "validate_authority_rrs", "validate_additional_rrs",
)
_RR_KEYS = ("fail_if_matches_regexp", "fail_if_all_match_regexp", "fail_if_not_matches_regexp",
            "fail_if_none_matches_regexp")
_TCP_KEYS = ("tls", "tls_config", "query_response", "preferred_ip_protocol", "ip_protocol_fallback",
             "source_ip_address")
_QUERY_RESPONSE_KEYS = ("expect", "send", "starttls")

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: methods and header names
_HTTP_VERSION = re.compile(r"HTTP/\d(\.\d)?")
_HTTP = HTTPProbe()
_DNS = DNSProbe()
_TCP = TCPProbe()


def _module(raw: Any, path: str, name: str) -> Module:
    _refuse_unsupported_prober(raw, path)
    s = _Section(raw, path, _MODULE_KEYS)
    prober = s.require("prober", _prober)
    timeout = s.get("timeout", _duration, None)
    for other in PROBERS:
        if other != prober and s.has(other):
            raise ConfigError(s.path_of(other), f'section does not apply to prober "{prober}"')
    parse = {"http": _http, "dns": _dns, "tcp": _tcp}[prober]
    section = parse(s.raw.get(prober), s.path_of(prober))
    return Module(name=name, prober=prober, timeout=timeout, **{prober: section})


def _refuse_unsupported_prober(raw: Any, path: str) -> None:
    if not isinstance(raw, dict):
        return
    named = raw.get("prober")
    sections = [k for k in UNSUPPORTED_PROBERS if k in raw]
    found = named if named in UNSUPPORTED_PROBERS else next(iter(sections), None)
    if found:
        raise ConfigError(path, f'prober "{found}" is not supported (supported: {", ".join(PROBERS)})')


def _prober(v: Any, p: str) -> str:
    s = _str(v, p)
    if s not in PROBERS:
        close = difflib.get_close_matches(s, PROBERS, n=1)
        hint = f'; did you mean "{close[0]}"?' if close else ""
        raise ConfigError(p, f'unknown prober "{s}"{hint} (supported: {", ".join(PROBERS)})')
    return s


def _http(raw: Any, path: str) -> HTTPProbe:
    s = _Section(raw, path, _HTTP_KEYS, ignored=_HTTP_IGNORED, unsupported=_HTTP_UNSUPPORTED)
    probe = HTTPProbe(
        valid_status_codes=s.get("valid_status_codes", _list_of(_status_code), ()),
        valid_http_versions=s.get("valid_http_versions", _list_of(_http_version), ()),
        method=s.get("method", _method, _HTTP.method),
        headers=s.get("headers", _headers, ()),
        body=s.get("body", _str, None),
        fail_if_ssl=s.get("fail_if_ssl", _bool, False),
        fail_if_not_ssl=s.get("fail_if_not_ssl", _bool, False),
        fail_if_body_matches_regexp=s.get("fail_if_body_matches_regexp", _list_of(_bytes_regex), ()),
        fail_if_body_not_matches_regexp=s.get("fail_if_body_not_matches_regexp", _list_of(_bytes_regex), ()),
        fail_if_header_matches=s.get("fail_if_header_matches", _list_of(_header_match), ()),
        fail_if_header_not_matches=s.get("fail_if_header_not_matches", _list_of(_header_match), ()),
        follow_redirects=_follow_redirects(s),
        tls_config=s.get("tls_config", _tls_config, TLSConfig()),
        basic_auth=s.get("basic_auth", _basic_auth, None),
        bearer_token=s.get("bearer_token", _str, None),
        bearer_token_file=s.get("bearer_token_file", _nonempty, None),
        proxy_url=s.get("proxy_url", _proxy_url, None),
        body_size_limit=s.get("body_size_limit", _size, 0),
        compression=s.get("compression", _choice(_COMPRESSIONS), ""),
        preferred_ip_protocol=s.get("preferred_ip_protocol", _ip_protocol, _HTTP.preferred_ip_protocol),
        ip_protocol_fallback=s.get("ip_protocol_fallback", _bool, True),
    )
    _check_http(probe, s)
    return probe


def _check_http(probe: HTTPProbe, s: _Section) -> None:
    """Rules that involve more than one key."""
    if probe.fail_if_ssl and probe.fail_if_not_ssl:
        raise ConfigError(s.path, "fail_if_ssl and fail_if_not_ssl cannot both be true")
    if probe.bearer_token is not None and probe.bearer_token_file is not None:
        raise ConfigError(s.path, "set bearer_token or bearer_token_file, not both")
    if probe.basic_auth is not None and (probe.bearer_token is not None or probe.bearer_token_file):
        raise ConfigError(s.path, "set basic_auth or a bearer token, not both")
    for name, value in probe.headers:
        if name.lower() == "accept-encoding" and probe.compression and not _accepts(value, probe.compression):
            raise ConfigError(s.path_of("headers"), f'{name} "{value}" does not accept the configured '
                                                    f'compression "{probe.compression}"')


def _accepts(accept_encoding: str, coding: str) -> bool:
    """Whether an Accept-Encoding value allows ``coding`` (itself or ``*``) with a non-zero quality."""
    for item in accept_encoding.split(","):
        name, _, params = item.partition(";")
        if name.strip().lower() not in (coding, "*"):
            continue
        params = params.strip().replace(" ", "")
        try:
            quality = float(params[2:]) if params.startswith("q=") else 1.0
        except ValueError:
            quality = 0.0
        if quality > 0:
            return True
    return False


def _follow_redirects(s: _Section) -> bool:
    if not s.has("no_follow_redirects"):
        return s.get("follow_redirects", _bool, True)
    if s.has("follow_redirects"):
        raise ConfigError(s.path_of("no_follow_redirects"),
                          "set follow_redirects or the deprecated no_follow_redirects, not both")
    return not s.get("no_follow_redirects", _bool, False)


def _status_code(v: Any, p: str) -> int:
    code = _int(v, p)
    if not 100 <= code <= 599:
        raise ConfigError(p, f"HTTP status codes are 100..599, got {code}")
    return code


def _http_version(v: Any, p: str) -> str:
    s = _str(v, p)
    if not _HTTP_VERSION.fullmatch(s):
        raise ConfigError(p, f'invalid HTTP version "{s}" (expected e.g. "HTTP/1.1" or "HTTP/2.0")')
    return s


def _method(v: Any, p: str) -> str:
    s = _str(v, p)
    if not _TOKEN.fullmatch(s):
        raise ConfigError(p, f'invalid HTTP method "{s}"')
    return s


def _header_name(v: Any, p: str) -> str:
    s = _str(v, p)
    if not _TOKEN.fullmatch(s):
        raise ConfigError(p, f'invalid HTTP header name "{s}"')
    return s


def _headers(v: Any, p: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(v, dict):
        raise _expected(v, p, "a mapping of header names to values")
    first: dict[str, str] = {}
    out = []
    for name, value in v.items():
        name = _header_name(name, p)
        hp = _child(p, name)
        if name.lower() in first:
            raise ConfigError(hp, f'duplicate header "{name}" (header names are case-insensitive; '
                                  f'already set as "{first[name.lower()]}")')
        first[name.lower()] = name
        text = _str(value, hp)
        if "\r" in text or "\n" in text:
            raise ConfigError(hp, "header values must not contain line breaks")
        out.append((name, text))
    return tuple(out)


def _header_match(raw: Any, path: str) -> HeaderMatch:
    s = _Section(raw, path, _HEADER_MATCH_KEYS)
    return HeaderMatch(
        header=s.require("header", _header_name),
        regexp=s.require("regexp", _regex),
        allow_missing=s.get("allow_missing", _bool, False),
    )


def _tls_config(raw: Any, path: str) -> TLSConfig:
    s = _Section(raw, path, _TLS_KEYS, unsupported=_TLS_UNSUPPORTED)
    tls = TLSConfig(
        insecure_skip_verify=s.get("insecure_skip_verify", _bool, False),
        ca_file=s.get("ca_file", _nonempty, None),
        cert_file=s.get("cert_file", _nonempty, None),
        key_file=s.get("key_file", _nonempty, None),
        server_name=s.get("server_name", _nonempty, None),
        min_version=s.get("min_version", _choice(_TLS_VERSIONS), None),
    )
    if (tls.cert_file is None) != (tls.key_file is None):
        raise ConfigError(path, "cert_file and key_file must be set together")
    return tls


def _basic_auth(raw: Any, path: str) -> BasicAuth:
    s = _Section(raw, path, _BASIC_AUTH_KEYS, unsupported=_BASIC_AUTH_UNSUPPORTED)
    auth = BasicAuth(
        username=s.get("username", _str, ""),
        password=s.get("password", _str, None),
        password_file=s.get("password_file", _nonempty, None),
    )
    if auth.password is not None and auth.password_file is not None:
        raise ConfigError(path, "set password or password_file, not both")
    return auth


def _proxy_url(v: Any, p: str) -> str:
    s = _str(v, p)
    if not _is_http_url(s):
        raise ConfigError(p, f'invalid proxy_url "{_mask_url(s)}": expected an http:// or https:// URL')
    return s


_WHITESPACE = re.compile(r"\s")


def _is_http_url(text: str) -> bool:
    if _WHITESPACE.search(text):
        return False
    try:
        parts = urllib.parse.urlsplit(text)
        _ = parts.port  # raises ValueError for a malformed port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _dns(raw: Any, path: str) -> DNSProbe:
    s = _Section(raw, path, _DNS_KEYS)
    over_tls = s.get("dns_over_tls", _bool, False)
    probe = DNSProbe(
        query_name=s.get("query_name", _dns_name, ""),
        query_type=s.get("query_type", _dns_enum(dns.rdatatype, "query type"), _DNS.query_type),
        query_class=s.get("query_class", _dns_enum(dns.rdataclass, "query class"), _DNS.query_class),
        recursion_desired=s.get("recursion_desired", _bool, True),
        valid_rcodes=s.get("valid_rcodes", _list_of(_dns_enum(dns.rcode, "rcode")), ()) or _DNS.valid_rcodes,
        transport_protocol=s.get("transport_protocol", _choice(("udp", "tcp")), "tcp" if over_tls else "udp"),
        preferred_ip_protocol=s.get("preferred_ip_protocol", _ip_protocol, _DNS.preferred_ip_protocol),
        ip_protocol_fallback=s.get("ip_protocol_fallback", _bool, True),
        source_ip_address=s.get("source_ip_address", _ip, None),
        dns_over_tls=over_tls,
        tls_config=s.get("tls_config", _tls_config, TLSConfig()),
        validate_answer_rrs=s.get("validate_answer_rrs", _rr_validator, RRValidator()),
        validate_authority_rrs=s.get("validate_authority_rrs", _rr_validator, RRValidator()),
        validate_additional_rrs=s.get("validate_additional_rrs", _rr_validator, RRValidator()),
    )
    if probe.dns_over_tls and probe.transport_protocol != "tcp":
        raise ConfigError(s.path_of("transport_protocol"), 'dns_over_tls needs transport_protocol "tcp"')
    return probe


def _dns_name(v: Any, p: str) -> str:
    s = _nonempty(v, p)
    try:
        dns.name.from_text(s)
    except dns.exception.DNSException as e:
        raise ConfigError(p, f'invalid DNS name "{s}": {e}') from None
    return s


def _dns_enum(module: Any, what: str) -> Parser[str]:
    """A parser accepting the names a dnspython enum module knows (any case), returned in canonical form."""

    def parse(v: Any, p: str) -> str:
        s = _str(v, p)
        try:
            return module.to_text(module.from_text(s))
        except (dns.exception.DNSException, ValueError):
            raise ConfigError(p, f'unknown DNS {what} "{s}"') from None

    return parse


def _rr_validator(raw: Any, path: str) -> RRValidator:
    s = _Section(raw, path, _RR_KEYS)
    return RRValidator(**{key: s.get(key, _list_of(_regex), ()) for key in _RR_KEYS})


def _tcp(raw: Any, path: str) -> TCPProbe:
    s = _Section(raw, path, _TCP_KEYS)
    return TCPProbe(
        tls=s.get("tls", _bool, False),
        tls_config=s.get("tls_config", _tls_config, TLSConfig()),
        query_response=s.get("query_response", _list_of(_query_response), ()),
        preferred_ip_protocol=s.get("preferred_ip_protocol", _ip_protocol, _TCP.preferred_ip_protocol),
        ip_protocol_fallback=s.get("ip_protocol_fallback", _bool, True),
        source_ip_address=s.get("source_ip_address", _ip, None),
    )


def _query_response(raw: Any, path: str) -> QueryResponse:
    s = _Section(raw, path, _QUERY_RESPONSE_KEYS, ignored=("labels",))
    step = QueryResponse(
        expect=s.get("expect", _bytes_regex, None),
        send=s.get("send", _str, None),
        starttls=s.get("starttls", _bool, False),
    )
    if step == QueryResponse():
        raise ConfigError(path, "needs at least one of expect, send, starttls")
    return step


def _modules(raw: Any, path: str) -> dict[str, Module]:
    if not isinstance(raw, dict):
        raise _expected(raw, path, "a mapping of module names to modules")
    modules = {}
    for name, body in raw.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(path, f"module names must be non-empty strings, got {_kind(name)} ({name!r})")
        modules[name] = _module(body, _child(path, name), name)
    return modules


# --- Defaults and regions --------------------------------------------------------------------------------

_TOP_KEYS = ("defaults", "modules", "regions", "services", "probe", "routing", "status_pages")
_DEFAULTS_KEYS = ("interval", "timeout", "concurrency", "max_checks")
_REGION_KEYS = ("name", "resolvers", "display_name", "latitude", "longitude", "vantage")
_VANTAGE_KEYS = ("min_healthy_ratio",)
_DEFAULTS = Defaults()


def _defaults(raw: Any, path: str) -> Defaults:
    s = _Section(raw, path, _DEFAULTS_KEYS)
    interval = s.get("interval", _duration, _DEFAULTS.interval)
    return Defaults(
        interval=interval,
        timeout=_timeout_within(s, interval, _DEFAULTS.timeout),
        concurrency=s.get("concurrency", _positive_int, _DEFAULTS.concurrency),
        max_checks=s.get("max_checks", _positive_int, _DEFAULTS.max_checks),
    )


def _timeout_within(s: _Section, interval: float, default: float) -> float:
    """An explicit timeout must fit in the interval; an inherited one is capped at it."""
    if not s.has("timeout"):
        return min(default, interval)
    timeout = s.get("timeout", _duration, default)
    if timeout > interval:
        raise ConfigError(s.path_of("timeout"), f"timeout ({format_duration(timeout)}) must not be longer "
                                                f"than the interval ({format_duration(interval)})")
    return timeout


class _SystemResolvers:
    """resolv.conf's nameservers for ``system``, read at most once per load, and only if used."""

    def __init__(self, resolv_conf: str) -> None:
        self.resolv_conf = resolv_conf

    @functools.cached_property
    def resolvers(self) -> tuple[Resolver, ...]:
        return system_resolvers(self.resolv_conf)


def _regions(raw: Any, path: str, local: str, system: _SystemResolvers) -> tuple[Region, ...]:
    items = _items(raw, path)
    if not items:
        raise ConfigError(path, "must not be empty (leave regions out for one local region)")
    names = _Names("region name")
    unnamed: str | None = None
    regions = []
    for i, item in enumerate(items):
        p = _index(path, i)
        region, named = _region(item, p, local, system)
        if not named:
            if unnamed is not None:
                raise ConfigError(p, f'only one region may leave out its name ({unnamed} already takes '
                                     f'the local region name "{local}")')
            unnamed = p
        names.add(region.name, _child(p, "name") if named else p)
        regions.append(region)
    return tuple(regions)


def _region(raw: Any, path: str, local: str, system: _SystemResolvers) -> tuple[Region, bool]:
    s = _Section(raw, path, _REGION_KEYS)
    name = s.get("name", _name, None)
    region = Region(
        name=name or local,
        resolvers=s.require("resolvers", lambda v, p: _resolvers(v, p, system)),
        display_name=s.get("display_name", _str, ""),
        latitude=s.get("latitude", _coordinate(90), None),
        longitude=s.get("longitude", _coordinate(180), None),
        vantage=s.get("vantage", _vantage, VantagePolicy()),
    )
    if (region.latitude is None) != (region.longitude is None):
        raise ConfigError(path, "latitude and longitude must be set together")
    return region, name is not None


def _vantage(raw: Any, path: str) -> VantagePolicy:
    s = _Section(raw, path, _VANTAGE_KEYS)
    return VantagePolicy(min_healthy_ratio=s.get("min_healthy_ratio", _ratio, VantagePolicy().min_healthy_ratio))


def _ratio(v: Any, p: str) -> float:
    x = _number(v, p)
    if not 0 <= x <= 1:
        raise ConfigError(p, f"must be between 0 and 1, got {v}")
    return x


def _coordinate(limit: int) -> Parser[float]:
    def parse(v: Any, p: str) -> float:
        x = _number(v, p)
        if not -limit <= x <= limit:
            raise ConfigError(p, f"must be between -{limit} and {limit}, got {v}")
        return x

    return parse


def _resolvers(raw: Any, path: str, system: _SystemResolvers) -> tuple[Resolver, ...]:
    texts = _list_of(_str)(raw, path)
    if not texts:
        raise ConfigError(path, 'must not be empty (use "system" for the host\'s resolvers)')
    names = _Names("resolver")
    out: list[Resolver] = []
    for i, text in enumerate(texts):
        p = _index(path, i)
        for resolver in _resolver(text, p, system):
            names.add(resolver.name, p)
            out.append(resolver)
    return tuple(out)


def _resolver(text: str, path: str, system: _SystemResolvers) -> tuple[Resolver, ...]:
    if text.strip() == "system":
        try:
            return system.resolvers
        except ValueError as e:
            raise ConfigError(path, f'cannot use "system": {e}') from None
    try:
        return (checks.parse_dns_server(text),)
    except ValueError as e:
        raise ConfigError(path, str(e)) from None


def _implicit_region(local: str, system: _SystemResolvers, needed: bool) -> Region:
    """The one region of a config without ``regions:``; see the module docstring."""
    try:
        return Region(name=local, resolvers=system.resolvers)
    except ValueError as e:
        if needed:
            raise ConfigError("regions", f'not set, so checks run in the local region "{local}" with the '
                                         f'"system" resolver, which is unusable: {e}') from None
        return Region(name=local, resolvers=())


# --- Services and checks ---------------------------------------------------------------------------------

_SERVICE_KEYS = ("name", "provider", "checks")
_CHECK_KEYS = ("name", "module", "authoritative", "query_name", "targets", "target", "interval", "timeout",
               "control", "regions", "two_path")
_AUTHORITATIVE_KEYS = ("zone", "port", "nameservers", "parents", "transports", "query_names", "ip_protocols",
                       "rediscover_interval")
_TWO_PATH_KEYS = ("enabled", "max_age")
_NOT_FOR_AUTHORITATIVE = ("query_name", "targets", "target", "two_path")
_AUTHORITATIVE = AuthoritativeCheck(zone="")
_TARGET_HINTS = {
    "http": 'an http check needs targets (URLs such as "https://example.com/")',
    "tcp": 'a tcp check needs targets (host:port such as "example.com:443")',
}


@dataclass(frozen=True)
class _Scope:
    """What checks may refer to."""

    defaults: Defaults
    modules: dict[str, Module]
    regions: tuple[str, ...]
    resolvers: dict[str, int]  # region -> how many resolvers it asks (dns checks without targets)
    planned: list[int] = field(default_factory=lambda: [0])  # scheduled checks so far (a mutable cell)

    def plan(self, cc: CheckConfig, path: str) -> CheckConfig:
        """Count the scheduled checks ``cc`` expands to, stopping at defaults.max_checks: a few aliases
        can name millions of (service, check, target, region) combinations in a small file."""
        regions = cc.regions or self.regions
        if cc.authoritative is not None:
            added = len(regions)
        elif cc.module.prober == "dns" and not cc.targets:
            added = sum(self.resolvers[r] for r in regions)
        else:
            added = len(cc.targets) * len(regions)
        self.planned[0] += added
        limit = self.defaults.max_checks
        if self.planned[0] > limit:
            raise ConfigError(path, f"the config expands to more than {limit} scheduled checks (this check "
                                    f"adds {added}); raise defaults.max_checks if that many are meant")
        return cc


def _services(raw: Any, path: str, scope: _Scope) -> tuple[Service, ...]:
    names = _Names("service name")
    return tuple(_service(item, _index(path, i), scope, names) for i, item in enumerate(_items(raw, path)))


def _service(raw: Any, path: str, scope: _Scope, names: _Names) -> Service:
    s = _Section(raw, path, _SERVICE_KEYS)
    name = s.require("name", _name)
    names.add(name, s.path_of("name"))
    provider = s.get("provider", _name, name)
    service_checks = s.require("checks", lambda v, p: _checks(v, p, name, scope))
    return Service(name=name, provider=provider, checks=service_checks)


def _checks(raw: Any, path: str, service: str, scope: _Scope) -> tuple[CheckConfig, ...]:
    items = _items(raw, path)
    if not items:
        raise ConfigError(path, "must not be empty")
    names = _Names("check name")
    return tuple(_check(item, _index(path, i), service, scope, names) for i, item in enumerate(items))


def _check(raw: Any, path: str, service: str, scope: _Scope, names: _Names) -> CheckConfig:
    return scope.plan(_check_config(raw, path, service, scope, names), path)


def _check_config(raw: Any, path: str, service: str, scope: _Scope, names: _Names) -> CheckConfig:
    s = _Section(raw, path, _CHECK_KEYS)
    name = s.require("name", _name)
    names.add(name, s.path_of("name"))
    if s.has("authoritative"):
        return _authoritative_check(s, name, scope)
    if not s.has("module"):
        raise ConfigError(s.path, 'missing required key "module" (or "authoritative" for a nameserver check)')
    module = s.require("module", lambda v, p: _check_module(v, p, f"{service}/{name}", scope.modules))
    query_name = _check_query_name(s, module, scope.modules)
    targets = _targets(s, module.prober)
    interval = s.get("interval", _duration, scope.defaults.interval)
    return CheckConfig(
        name=name,
        module=module,
        targets=targets,
        query_name=query_name,
        interval=interval,
        timeout=_timeout_within(s, interval, scope.defaults.timeout),
        control=s.get("control", _bool, False),
        regions=s.get("regions", lambda v, p: _region_refs(v, p, scope.regions), ()),
        two_path=_check_two_path(s, module),
    )


def _check_two_path(s: _Section, module: Module) -> TwoPath | None:
    if not s.has("two_path"):
        return None
    if module.prober != "http":
        raise ConfigError(s.path_of("two_path"), f'only applies to http checks (the module\'s prober is '
                                                 f'"{module.prober}")')
    return s.get("two_path", _two_path, None)


def _two_path(raw: Any, path: str) -> TwoPath:
    s = _Section(raw, path, _TWO_PATH_KEYS)
    return TwoPath(enabled=s.get("enabled", _bool, True), max_age=s.get("max_age", _duration, TwoPath().max_age))


# --- Authoritative nameserver checks ---------------------------------------------------------------------


def _authoritative_check(s: _Section, name: str, scope: _Scope) -> CheckConfig:
    """A check with ``authoritative:`` instead of a module: its nameservers are its targets."""
    if s.has("module"):
        raise ConfigError(s.path_of("authoritative"), 'set "module" or "authoritative", not both')
    for key in _NOT_FOR_AUTHORITATIVE:
        if s.has(key):
            raise ConfigError(s.path_of(key), "does not apply to authoritative checks (they ask the zone's "
                                              "nameservers, set under authoritative)")
    interval = s.get("interval", _duration, scope.defaults.interval)
    settings = s.get("authoritative", _authoritative, _AUTHORITATIVE)
    if not settings.nameservers and settings.rediscover_interval < interval:
        raise ConfigError(_child(s.path_of("authoritative"), "rediscover_interval"),
                          f"must not be shorter than the check's interval ({format_duration(interval)}), "
                          f"got {format_duration(settings.rediscover_interval)}")
    return CheckConfig(
        name=name,
        module=AUTHORITATIVE_MODULE,
        interval=interval,
        timeout=_timeout_within(s, interval, scope.defaults.timeout),
        control=s.get("control", _bool, False),
        regions=s.get("regions", lambda v, p: _region_refs(v, p, scope.regions), ()),
        authoritative=settings,
    )


def _authoritative(raw: Any, path: str) -> AuthoritativeCheck:
    s = _Section(raw, path, _AUTHORITATIVE_KEYS)
    zone = s.require("zone", _zone)
    port = s.get("port", _port_number, _AUTHORITATIVE.port)
    nameservers = s.get("nameservers", lambda v, p: _unique(v, p, _static_nameserver(port), "nameserver address",
                                                             _static_key), ())
    if s.has("nameservers") and not nameservers:
        raise ConfigError(s.path_of("nameservers"), "must not be empty (leave it out to discover them)")
    if nameservers:
        for key in ("parents", "rediscover_interval"):
            if s.has(key):
                raise ConfigError(s.path_of(key), "only applies when nameservers are discovered (a static "
                                                  '"nameservers" list is set)')
    return AuthoritativeCheck(
        zone=zone,
        nameservers=nameservers,
        parents=s.get("parents", lambda v, p: _nonempty_unique(v, p, _server_address(port), "parent",
                                                                _resolver_name), ()),
        transports=s.get("transports", _choices(("udp", "tcp"), "transport"), _AUTHORITATIVE.transports),
        query_names=s.get("query_names", lambda v, p: _nonempty_unique(v, p, _name_in(zone), "query name",
                                                                        _name_key), ()),
        ip_protocols=s.get("ip_protocols", _choices(("ip4", "ip6"), "IP protocol"), _AUTHORITATIVE.ip_protocols),
        rediscover_interval=s.get("rediscover_interval", _duration, _AUTHORITATIVE.rediscover_interval),
        port=port,
    )


def _zone(v: Any, p: str) -> str:
    text = _dns_name(v, p)
    name = dns.name.from_text(text)
    if name == dns.name.root:
        raise ConfigError(p, "must be a zone below the root (it is read from its parent's delegation)")
    return name.to_text(omit_final_dot=True).lower()


def _name_in(zone: str) -> Parser[str]:
    origin = dns.name.from_text(zone)

    def parse(v: Any, p: str) -> str:
        text = _dns_name(v, p)
        if not dns.name.from_text(text).is_subdomain(origin):
            raise ConfigError(p, f'"{text}" is not in zone {zone} (its nameservers only answer for the zone)')
        return text

    return parse


def _port_number(v: Any, p: str) -> int:
    n = _int(v, p)
    if not 0 < n < 65536:
        raise ConfigError(p, f"must be a port number (1-65535), got {n}")
    return n


def _server_address(default_port: int) -> Parser[Resolver]:
    """``ip`` or ``ip:port`` (``[v6]:port``) of a DNS server asked directly; no port = ``default_port``."""

    def parse(v: Any, p: str) -> Resolver:
        text = _str(v, p).strip()
        if "://" in text:
            raise ConfigError(p, f'invalid nameserver address "{text}": expected ip or ip:port')
        try:
            server = checks.parse_dns_server(text)
        except ValueError as e:
            raise ConfigError(p, str(e).replace("resolver address", "nameserver address")) from None
        explicit = text.count(":") == 1 or (text.startswith("[") and "]:" in text)
        port = server.port if explicit else default_port
        return Resolver(name=_join_host_port(server.host, port), host=server.host, port=port)

    return parse


def _static_nameserver(default_port: int) -> Parser[StaticNameserver]:
    address = _server_address(default_port)

    def parse(v: Any, p: str) -> StaticNameserver:
        text = _str(v, p)
        name, sep, rest = text.partition("=")
        if sep:
            name = dns.name.from_text(_dns_name(name.strip(), p)).to_text(omit_final_dot=True).lower()
        try:
            server = address(rest.strip() if sep else text, p)
        except ConfigError:
            raise ConfigError(p, f'invalid nameserver "{text}": expected "name=ip[:port]" or "ip[:port]" '
                                 "(the address is not looked up)") from None
        return StaticNameserver(name=name if sep else "", address=server.host, port=server.port)

    return parse


def _static_key(ns: StaticNameserver) -> str:
    return _join_host_port(ns.address, ns.port)


def _resolver_name(server: Resolver) -> str:
    return server.name


def _name_key(name: str) -> str:
    return dns.name.from_text(name).to_text().lower()


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _unique(v: Any, p: str, item: Parser[T], what: str, key: Callable[[T], str] = str) -> tuple[T, ...]:
    """A list whose items must differ by ``key`` (a duplicate points at the first use)."""
    values = _list_of(item)(v, p)
    seen = _Names(what)
    for i, value in enumerate(values):
        seen.add(key(value), _index(p, i))
    return values


def _nonempty_unique(v: Any, p: str, item: Parser[T], what: str, key: Callable[[T], str] = str) -> tuple[T, ...]:
    values = _unique(v, p, item, what, key)
    if not values:
        raise ConfigError(p, "must not be empty (leave it out for the default)")
    return values


def _choices(options: tuple[str, ...], what: str) -> Parser[tuple[str, ...]]:
    """A non-empty list of distinct values from ``options``."""
    choice = _choice(options)

    def parse(v: Any, p: str) -> tuple[str, ...]:
        return _nonempty_unique(v, p, choice, what)

    return parse


def _check_module(v: Any, p: str, inline_name: str, modules: dict[str, Module]) -> Module:
    if isinstance(v, str):
        if v not in modules:
            raise ConfigError(p, f'unknown module "{v}" (known: {", ".join(sorted(modules)) or "none"})')
        return modules[v]
    if isinstance(v, dict):
        return _module(v, p, inline_name)
    raise _expected(v, p, "a module name or a module mapping")


def _check_query_name(s: _Section, module: Module, modules: dict[str, Module]) -> str | None:
    query_name = s.get("query_name", _dns_name, None)
    if module.prober != "dns":
        if query_name is not None:
            raise ConfigError(s.path_of("query_name"), f'only applies to dns checks (the module\'s prober '
                                                       f'is "{module.prober}")')
        return None
    if query_name is None and not module.dns.query_name:
        where = f'module "{module.name}"' if modules.get(module.name) == module else "the inline module"
        raise ConfigError(s.path, f"a dns check needs a query_name: set one on the check or in {where}")
    return query_name


def _targets(s: _Section, prober: str) -> tuple[str, ...]:
    if s.has("target"):
        if s.has("targets"):
            raise ConfigError(s.path_of("target"), 'set "target" or "targets", not both')
        pairs = [(s.get("target", _str, ""), s.path_of("target"))]
    else:
        texts = s.get("targets", _list_of(_str), ())
        pairs = [(t, _index(s.path_of("targets"), i)) for i, t in enumerate(texts)]
        if s.has("targets") and not texts:
            hint = " (leave it out to ask the region's resolvers)" if prober == "dns" else ""
            raise ConfigError(s.path_of("targets"), f"must not be empty{hint}")
    if not pairs and prober != "dns":
        raise ConfigError(s.path, _TARGET_HINTS[prober])
    seen = _Names("target")
    for text, p in pairs:
        _TARGET_CHECKS[prober](text, p)
        seen.add(text, p)
    return tuple(text for text, _ in pairs)


def _http_target(text: str, p: str) -> None:
    if not _is_http_url(text):
        raise ConfigError(p, f'invalid http target "{_mask_url(text)}": expected an http:// or https:// URL')
    if urllib.parse.urlsplit(text).password is not None:
        raise ConfigError(p, f'http target "{_mask_url(text)}" carries a password, which would be exported in '
                             "the target label; use the module's http.basic_auth instead")


def _tcp_target(text: str, p: str) -> None:
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        try:
            host_ok = ipaddress.ip_address(host[1:-1]).version == 6
        except ValueError:
            host_ok = False
    else:
        host_ok = bool(host) and not any(c.isspace() or c in ":/[]@" for c in host)
    if not (sep and host_ok and port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(p, f'invalid tcp target "{text}": expected host:port, e.g. "example.com:443" '
                             'or "[2001:db8::1]:443"')


def _dns_target(text: str, p: str) -> None:
    if text.strip() == "system":
        raise ConfigError(p, "\"system\" cannot be a dns target (leave targets out to ask the region's "
                             "resolvers, system included)")
    problem = _dns_server_problem(text)
    if problem:
        raise ConfigError(p, problem)


@functools.lru_cache(maxsize=1024)
def _dns_server_problem(text: str) -> str:
    """Why ``text`` is not a DNS server address ("" if it is); most configs repeat a few servers."""
    try:
        checks.parse_dns_server(text)
    except ValueError as e:
        return str(e)
    return ""


_TARGET_CHECKS: dict[str, Callable[[str, str], None]] = {
    "http": _http_target, "tcp": _tcp_target, "dns": _dns_target,
}


def _region_refs(v: Any, p: str, known: tuple[str, ...]) -> tuple[str, ...]:
    names = _list_of(_str)(v, p)
    if not names:
        raise ConfigError(p, "must not be empty (leave it out to run in every region)")
    seen = _Names("region")
    for i, name in enumerate(names):
        ip = _index(p, i)
        if name not in known:
            raise ConfigError(ip, f'unknown region "{name}" (known: {", ".join(sorted(known))})')
        seen.add(name, ip)
    return names


# --- The whole document ----------------------------------------------------------------------------------


def _build(doc: Any, local: str, system: _SystemResolvers) -> Config:
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError("", f"the configuration must be a mapping (keys: {', '.join(_TOP_KEYS)}), "
                              f"got {_kind(doc)}")
    top = _Section(doc, "", _TOP_KEYS)
    defaults = top.get("defaults", _defaults, _DEFAULTS)
    modules = top.get("modules", _modules, {})
    if top.has("regions"):
        regions = _regions(doc["regions"], "regions", local, system)
    else:
        regions = (_implicit_region(local, system, needed=bool(doc.get("services"))),)
    resolvers = {r.name: len(r.resolvers) for r in regions}
    scope = _Scope(defaults, modules, tuple(r.name for r in regions), resolvers)
    services = top.get("services", lambda v, p: _services(v, p, scope), ())
    probe = top.get("probe", lambda v, p: parse_probe_policy(v, p, modules), ProbePolicy())
    from exporter.config.routing import parse_routing, parse_status_pages  # it reads this module's helpers

    return Config(defaults=defaults, modules=modules, regions=regions, services=services, probe=probe,
                  routing=top.get("routing", parse_routing, RoutingConfig()),
                  status_pages=top.get("status_pages", parse_status_pages, ()))


# --- Dumping ---------------------------------------------------------------------------------------------

_SECRET_FIELDS = frozenset({"password", "bearer_token"})
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_SECRET_HEADER_WORDS = ("token", "secret", "password", "apikey", "api-key")
_OMITTED_WHEN_DEFAULT = {TLSConfig: TLSConfig(), RRValidator: RRValidator()}
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*):[^/?#]*@")  # scheme://user:password@


def dump_config(config: Config) -> str:
    """The effective config as YAML, secrets shown as ``<secret>``: for ``/config`` and debug output.

    It loads back to the same config (secrets aside); ``system`` resolvers are folded back into one
    ``system`` entry, and the addresses they stand for are listed in a comment. Empty sections are left
    out, so ``dump_config(Config(modules={name: module}))`` shows just that module.
    """
    doc: dict[str, Any] = {
        "defaults": {
            "interval": format_duration(config.defaults.interval),
            "timeout": format_duration(config.defaults.timeout),
            "concurrency": config.defaults.concurrency,
        },
    }
    if config.defaults.max_checks != _DEFAULTS.max_checks:
        doc["defaults"]["max_checks"] = config.defaults.max_checks
    if config.modules:
        doc["modules"] = {name: _module_doc(module) for name, module in config.modules.items()}
    if config.regions:
        doc["regions"] = [_region_doc(region) for region in config.regions]
    if config.services:
        doc["services"] = [_service_doc(service, config.modules) for service in config.services]
    from exporter.config.routing import signals_doc  # it reads this module's helpers

    doc.update(signals_doc(config))
    header = [f"# Secrets are shown as {SECRET}."]
    if config.checksum:  # loaded from a file or string, not assembled in code
        header.insert(0, f"# Effective configuration from {config.source} (sha256 {config.checksum})")
    for region in config.regions:
        system = [r for r in region.resolvers if _is_system(r)]
        if system:
            listed = ", ".join(f"{r.name} = {_address(r)}" for r in system)
            header.append(f"# Region {region.name}: {listed}")
    body = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000)
    return "\n".join(header) + "\n" + body


def _is_system(resolver: Resolver) -> bool:
    return resolver.name == "system" or resolver.name.startswith("system#")


def _address(resolver: Resolver) -> str:
    host = f"[{resolver.host}]" if ":" in resolver.host else resolver.host
    return f"{'tls://' if resolver.tls else ''}{host}:{resolver.port}"


def _module_doc(module: Module) -> dict[str, Any]:
    doc: dict[str, Any] = {"prober": module.prober}
    if module.timeout is not None:
        doc["timeout"] = format_duration(module.timeout)
    doc[module.prober] = _plain(getattr(module, module.prober))
    return doc


def _plain(value: Any) -> Any:
    """Dataclasses, tuples and patterns as YAML-ready data; unset and default-valued parts left out."""
    if isinstance(value, re.Pattern):
        pattern = value.pattern
        return pattern.decode("utf-8", "backslashreplace") if isinstance(pattern, bytes) else pattern
    if is_dataclass(value):
        out = {}
        for f in fields(value):
            v = getattr(value, f.name)
            if v is None or v == () or v == "" or _OMITTED_WHEN_DEFAULT.get(type(v), ...) == v:
                continue
            out[f.name] = _field_doc(f.name, v)
        return out
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _field_doc(name: str, value: Any) -> Any:
    if name in _SECRET_FIELDS:
        return SECRET
    if name == "headers":
        return {k: SECRET if _is_secret_header(k) else v for k, v in value}
    if name == "proxy_url":
        return _mask_url(value)
    return _plain(value)


def _is_secret_header(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SECRET_HEADERS or any(word in lowered for word in _SECRET_HEADER_WORDS)


def _mask_url(url: str) -> str:
    """``url`` with the password of its userinfo (``user:pass@``) replaced by ``<secret>``.

    A pattern rather than urlsplit, so that malformed URLs quoted in error messages are masked too.
    """
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{SECRET}@", url, count=1)


def _authoritative_doc(a: AuthoritativeCheck) -> dict[str, Any]:
    doc: dict[str, Any] = {"zone": a.zone, "port": a.port}
    if a.nameservers:
        doc["nameservers"] = [(f"{ns.name}=" if ns.name else "") + _join_host_port(ns.address, ns.port)
                              for ns in a.nameservers]
    else:
        if a.parents:
            doc["parents"] = [p.name for p in a.parents]
        doc["rediscover_interval"] = format_duration(a.rediscover_interval)
    doc["transports"] = list(a.transports)
    if a.query_names:
        doc["query_names"] = list(a.query_names)
    doc["ip_protocols"] = list(a.ip_protocols)
    return doc


def _region_doc(region: Region) -> dict[str, Any]:
    resolvers: list[str] = []
    for r in region.resolvers:
        text = "system" if _is_system(r) else r.name
        if text not in resolvers:
            resolvers.append(text)
    doc: dict[str, Any] = {"name": region.name, "resolvers": resolvers}
    if region.display_name:
        doc["display_name"] = region.display_name
    if region.latitude is not None:
        doc["latitude"] = region.latitude
        doc["longitude"] = region.longitude
    if region.vantage != VantagePolicy():
        doc["vantage"] = {"min_healthy_ratio": region.vantage.min_healthy_ratio}
    return doc


def _service_doc(service: Service, modules: dict[str, Module]) -> dict[str, Any]:
    return {
        "name": service.name,
        "provider": service.provider,
        "checks": [_check_doc(cc, modules) for cc in service.checks],
    }


def _check_doc(cc: CheckConfig, modules: dict[str, Module]) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": cc.name}
    if cc.authoritative is not None:
        doc["authoritative"] = _authoritative_doc(cc.authoritative)
    else:
        named = modules.get(cc.module.name) == cc.module
        doc["module"] = cc.module.name if named else _module_doc(cc.module)
    if cc.two_path is not None:
        doc["two_path"] = {"enabled": cc.two_path.enabled, "max_age": format_duration(cc.two_path.max_age)}
    if cc.query_name:
        doc["query_name"] = cc.query_name
    if cc.targets:
        doc["targets"] = [_mask_url(t) for t in cc.targets]
    doc["interval"] = format_duration(cc.interval)
    doc["timeout"] = format_duration(cc.timeout)
    doc["control"] = cc.control
    if cc.regions:
        doc["regions"] = list(cc.regions)
    return doc
