"""Reading a config file safely: a bounded read of a regular file, then YAML into plain data.

The text is parsed by a SafeLoader subclass (libyaml's when usable, else PyYAML's pure-Python one, both
with the same construction rules) that refuses duplicate mapping keys and bounds what merge keys and
aliases may expand to. Syntax errors read the same whichever parser runs. The cyclic garbage collector is
paused while a config is parsed and built (GC_PAUSE).
"""

from __future__ import annotations

import gc
import os
import stat
import threading
from typing import Any

import yaml

from exporter.config.errors import ConfigError, child_path, index_path

MAX_CONFIG_BYTES = 64 * 1024 * 1024  # default --config.max-size: far above any real config (20k checks ~ 2.4 MB)


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
        path = index_path(path, key) if isinstance(key, int) else child_path(path, key)
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


def parse_yaml(text: str, source: str) -> Any:
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
