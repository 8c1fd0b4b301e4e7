"""Spec files to plain data, noting the line of every value and key for errors: the line-tracking YAML loader."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from ..errors import SpecError
from .messages import show, show_bytes

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR = "tag:yaml.org,2002:str"
_MAX_NODES = 100_000  # per document; stops alias bombs from expanding without end
MAX_FILE_BYTES = 8 << 20  # a spec file's size; ten thousand services take about 3 MiB


class Lines:
    """Where each value (and each mapping key) sits in a document, by field path like spec.ports[0]."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.keys: dict[str, int] = {}
        self.booleans: dict[str, str] = {}  # path -> the plain scalar YAML 1.1 made a boolean (yes, off, ...)
        self.problems: list[tuple[int, str, str]] = []  # line, path, message

    def find(self, path: str, default: int, key: bool = False) -> int:
        if key and path in self.keys:
            return self.keys[path]
        return line_of(self.values, path, default)


def line_of(lines: dict[str, int], path: str, default: int) -> int:
    """The line of path, or of the nearest enclosing value that has one (the mapping missing a field)."""
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return lines.get("", default)


class _Tree:
    """Plain data from a composed YAML document, recording lines in a Lines as it goes."""

    def __init__(self, loader: Any, filename: str) -> None:
        self.loader, self.filename = loader, filename
        self.lines = Lines()
        self.count = 0
        self.open: set[int] = set()  # ids of collections being built: an alias into one is a loop

    def build(self, node: yaml.Node, path: str) -> Any:
        line = node.start_mark.line + 1
        self.lines.values[path] = line
        self.count += 1
        if self.count > _MAX_NODES:
            # the path is no help here: an alias bomb's is a long run of indexes
            raise SpecError(self.filename, line, "", f"the document holds too many values: more than {_MAX_NODES:,} "
                                                     "(each use of an alias counts its values again)")
        if id(node) in self.open:
            raise SpecError(self.filename, line, path, "expected a spec document, got a recursive alias")
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _STR:
                return node.value  # most values: what construct_object would return, without its bookkeeping
            if node.tag.endswith(":bool") and not node.style:
                self.lines.booleans[path] = node.value
            return self.loader.construct_object(node)
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
            own = {id(k) for k, _ in node.value}
            self.loader.flatten_mapping(node)  # applies '<<' merge keys
            # a key given here overrides one a merge brings, and a merge's earlier mappings override its later ones
            given = {k.value for k, _ in node.value if id(k) in own and isinstance(k, yaml.ScalarNode)}
            out: dict[str, Any] = {}
            merged: set[str] = set()
            for key_node, value_node in node.value:
                key_line = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    self.lines.problems.append((key_line, path, "expected a field name, got a collection as a key"))
                    continue
                key = key_node.value  # as written: keys like 'on' or 'yes' stay strings
                sub = f"{path}.{key}" if path else key
                if id(key_node) not in own:
                    if key in given or key in merged:
                        continue
                    merged.add(key)
                elif key in out and key not in merged:
                    self.lines.problems.append((key_line, sub, "duplicate field, expected each field once"))
                self.lines.keys[sub] = key_line
                out[key] = self.build(value_node, sub)
            return out
        finally:
            self.open.discard(id(node))


def documents(text: str, filename: str) -> Iterator[tuple[Any, int, Lines]]:
    """Each document of text that is not empty: its data, its first line, and the lines of its values.

    Made one at a time, so an error in a document is found before anything in the ones after it."""
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
                continue  # an empty document, e.g. after a trailing '---'
            line = node.start_mark.line + 1
            if not isinstance(node, yaml.MappingNode):
                got = show(loader.construct_object(node)) if isinstance(node, yaml.ScalarNode) else "a list"
                raise SpecError(filename, line, "", f"expected a Service document (a mapping), got {got}")
            tree = _Tree(loader, filename)
            data = tree.build(node, "")
            loader.constructed_objects = {}
            yield data, line, tree.lines
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or "malformed"
        if mark is not None and text[mark.index:mark.index + 1] == "\t":
            problem = f"a tab at column {mark.column + 1}; YAML indents with spaces only"
        where = f" ({e.context})" if e.context else ""
        raise SpecError(filename, mark.line + 1 if mark else None, "", f"invalid YAML: {problem}{where}") from None
    except yaml.YAMLError as e:  # reader errors: bad characters, with an offset rather than a line
        position = getattr(e, "position", None)
        line = text.count("\n", 0, position) + 1 if isinstance(position, int) else None
        raise SpecError(filename, line, "", f"invalid YAML: {getattr(e, 'reason', e)}") from None
    finally:
        loader.dispose()


def read(path: str | Path) -> tuple[str, str, Path]:
    """Text, name to show and base directory of one spec file; '-' is stdin."""
    name = str(path)
    too_large = f"the file is too large: a spec file may hold at most {show_bytes(MAX_FILE_BYTES)}"
    if name == "-":
        text = sys.stdin.read(MAX_FILE_BYTES + 1)
        if len(text.encode()) > MAX_FILE_BYTES:
            raise SpecError("<stdin>", None, "", too_large)
        return text, "<stdin>", Path.cwd()
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise SpecError(name, None, "", f"the file is too large ({show_bytes(size)}): a spec file may hold "
                                                f"at most {show_bytes(MAX_FILE_BYTES)}")
            data = f.read(MAX_FILE_BYTES + 1)  # a pipe or device has no size to check first
        if len(data) > MAX_FILE_BYTES:
            raise SpecError(name, None, "", too_large)
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError(name, None, "", "expected a UTF-8 text file") from None
    except OSError as e:
        raise SpecError(name, None, "", f"cannot read the spec file: {e.strerror or e}") from None
    return text, name, Path(os.path.abspath(os.path.dirname(name) or "."))
