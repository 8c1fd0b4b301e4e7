"""The host's iptables tables, read whole with iptables-save and changed at once with iptables-restore: what the
runtimes that make bridges (native, containerd) change their rules with."""

from __future__ import annotations

from .errors import RuntimeFailure


def run(argv: list[str], stdin: str | None = None, runtime: str | None = None) -> str:
    """argv's output; RuntimeFailure with its last line of errors when it fails."""
    import subprocess  # here: only a bridge's making and removal run iptables, not each container's run

    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise RuntimeFailure(f"bridge networking needs {argv[0]} (Debian: apt-get install iptables)",
                             runtime=runtime) from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise RuntimeFailure(f"{argv[0]} failed: {why}", runtime=runtime)
    return done.stdout


def saved(runtime: str | None = None) -> dict[str, list[str]]:
    """The host's tables as iptables-save prints them, by table: chain declarations and rules."""
    tables: dict[str, list[str]] = {}
    current: list[str] = []
    for line in run(["iptables-save"], runtime=runtime).splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:], [])
        elif line and not line.startswith("#") and line != "COMMIT":
            current.append(line)
    return tables


def restore(script: list[str], runtime: str | None = None) -> None:
    """Makes script's changes (iptables-restore's format) at once, leaving every other rule as it is."""
    if script:
        run(["iptables-restore", "-w", "--noflush"], "\n".join(script) + "\n", runtime)
