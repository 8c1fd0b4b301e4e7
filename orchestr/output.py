"""How the command line prints: tables, JSON or YAML, one-line errors, and the exit status each error calls for."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from .errors import Interrupted, OrchestrError, SpecError

EXIT_FAILED = 1  # an action or the container failed
EXIT_ERROR = 2  # bad input, or orchestr could not do what was asked


def print_table(header: Sequence[str], rows: Sequence[Sequence]) -> None:
    rows = [tuple(str(x) for x in r) for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    for r in [tuple(header), *rows]:
        print("  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip())


_COLOURS = {"green": "32", "red": "31", "yellow": "33", "blue": "34", "magenta": "35", "cyan": "36", "bold": "1"}


def colour(text: str, name: str, stream=None) -> str:
    """text in a colour when stream (stdout) is a terminal and NO_COLOR is not set (no-color.org), else as it is."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb" or not stream.isatty():
        return text
    return f"\x1b[{_COLOURS[name]}m{text}\x1b[0m"


def dumps(value, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(value, indent=2)
    import yaml

    return yaml.safe_dump(value, sort_keys=False).rstrip("\n")


def print_error(message: str) -> None:
    """One line on stderr, as every error and warning of the command line is."""
    print(f"orchestr: {message}", file=sys.stderr)


def report(exc: BaseException, debug: bool) -> int:
    """Prints what ended a command as one line (--debug: with its traceback); returns the exit status."""
    if isinstance(exc, SystemExit):
        raise exc
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return report(exc.exceptions[0], debug)
    if debug:
        import traceback

        traceback.print_exception(exc)
    if isinstance(exc, OrchestrError):
        print_error(str(exc))
        if isinstance(exc, Interrupted):
            return 128 + exc.signal
        return EXIT_ERROR if isinstance(exc, SpecError) else EXIT_FAILED
    if isinstance(exc, BrokenPipeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    detail = str(exc).splitlines()[0] if str(exc) else ""
    print_error(f"unexpected {type(exc).__name__}: {detail} (run with --debug for details)")
    return EXIT_FAILED
