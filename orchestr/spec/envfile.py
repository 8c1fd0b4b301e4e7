"""`.env` and `env_file` files: KEY=VALUE lines, as compose reads them, each error at its file and line."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from ..errors import SpecError
from .loader import MAX_FILE_BYTES

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "$": "$"}


def read_env_file(path: Path, shown: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of one env file; a bare KEY takes its value from environ, and is left out when unset there."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise SpecError(shown, None, "", f"cannot read the env file: {e.strerror or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise SpecError(shown, None, "", "the env file is too large")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SpecError(shown, None, "", "expected a UTF-8 text file") from None
    return parse_env(text, shown, environ)


def parse_env(text: str, shown: str, environ: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not _NAME.fullmatch(key):
            raise SpecError(shown, number, "", f"expected KEY=VALUE with a variable name as KEY, got {raw.strip()!r}")
        if not sep:
            if key in environ:
                out[key] = environ[key]
            continue
        out[key] = _value(value.strip(), shown, number)
    return out


def _value(value: str, shown: str, number: int) -> str:
    if value[:1] in ("'", '"'):
        quote = value[0]
        end = _closing(value, quote)
        if end < 0:
            raise SpecError(shown, number, "", f"the value's {quote} is not closed on its line")
        inner = value[1:end]
        if quote == '"':
            inner = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], "\\" + m[1]), inner)
        return inner
    # unquoted: a ' #' starts a comment
    return re.split(r"\s+#", value, maxsplit=1)[0].rstrip()


def _closing(value: str, quote: str) -> int:
    i = 1
    while i < len(value):
        if value[i] == "\\" and quote == '"':
            i += 2
            continue
        if value[i] == quote:
            return i
        i += 1
    return -1
