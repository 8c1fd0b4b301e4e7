"""python -m orchestr.testing RUNTIME [pytest args]: the conformance suite against one installed runtime."""

from __future__ import annotations

import sys
from pathlib import Path

USAGE = "usage: python -m orchestr.testing RUNTIME [pytest args]   (RUNTIME: a name `orchestr plugins` lists)"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        import pytest
    except ModuleNotFoundError:
        print("the conformance kit runs on pytest: pip install 'orchestr[test]'", file=sys.stderr)
        return 2
    from orchestr import plugins

    installed = plugins.runtimes()
    if args[0] not in installed:
        print(f"unknown runtime {args[0]!r} (installed: {', '.join(sorted(installed)) or 'none'})", file=sys.stderr)
        return 2
    suite = Path(__file__).with_name("suite.py")
    # no cache provider: the suite may live in a read-only site-packages
    return int(pytest.main([str(suite), "-p", "orchestr.testing.plugin", "-p", "no:cacheprovider",
                            "--orchestr-runtime", args[0], *args[1:]]))


if __name__ == "__main__":
    sys.exit(main())
