"""Shell completion: the bash script loaded in a real bash, COMPREPLY read back for commands, flags, choices,
files, namespaces and container names (these from containers on the native runtime)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

BIN = str(Path(sys.executable).parent)


def complete(line: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> list[str]:
    """COMPREPLY after the bash script completes the last word of line (a trailing space: a new word)."""
    words = shlex.split(line) + ([""] if line.endswith(" ") else [])
    script = (
        'source <(orchestr completion bash)\n'
        f'COMP_WORDS=({" ".join(shlex.quote(w) for w in words)})\n'
        f'COMP_CWORD={len(words) - 1}\n'
        f'COMP_LINE={shlex.quote(line)}\n'
        '_orchestr_complete\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True, text=True,
                          env={**os.environ, **(env or {}), "PATH": f"{BIN}:{os.environ['PATH']}"}, cwd=cwd,
                          timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return [w for w in proc.stdout.split("\n") if w]


def test_commands_flags_and_choices_complete(tmp_path):
    env = {"ORCHESTR_STATE_DIR": str(tmp_path / "state")}
    assert complete("orchestr ", env) == sorted([
        "apply", "completion", "controller", "convert", "delete", "diff", "events", "exec", "export", "get", "history",
        "images", "inspect", "logs", "pause", "plugins", "rollout", "run", "start", "stats", "stop", "unpause"])
    assert complete("orchestr de", env) == ["delete"]
    assert complete("orchestr get --o", env) == ["--output"]
    assert complete("orchestr get -o y", env) == ["yaml"]
    assert complete("orchestr images i", env) == ["import", "inspect"]
    assert complete("orchestr completion ", env) == ["bash", "zsh", "fish"]
    assert complete("orchestr apply --run", env) == ["--runtime"]
    assert "native" in complete("orchestr apply --runtime ", env)
    (tmp_path / "app.yaml").touch()
    (tmp_path / "apples.txt").touch()
    assert complete("orchestr apply -f ap", env, cwd=tmp_path) == ["apples.txt", "app.yaml"]
    assert complete("orchestr get -n ", env) == []  # no containers in this state dir yet
    assert complete("orchestr logs -n nowhere ", env) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="the native runtime needs root")
def test_namespaces_and_container_names_complete(namespace, state_dir, busybox_archive, tmp_path):
    from test_native_cli import assert_nothing_left, orc, service, write

    env = {"ORCHESTR_STATE_DIR": str(state_dir), "ORCHESTR_RUNTIME": "native"}
    orc("images", "import", str(busybox_archive), state_dir=state_dir, check=True)
    spec = write(tmp_path / "app.yaml", service("web", namespace, replicas=2), service("db", namespace))
    orc("apply", "-f", spec, state_dir=state_dir, check=True)
    try:
        assert complete("orchestr get -n ", env) == [namespace]
        assert complete(f"orchestr get -n {namespace[:3]}", env) == [namespace]
        assert complete(f"orchestr logs -n {namespace} ", env) == ["db-0", "web-0", "web-1", "svc/db", "svc/web"]
        assert complete(f"orchestr logs -n {namespace} svc/w", env) == ["svc/web"]
        assert complete(f"orchestr exec --namespace {namespace} w", env) == ["web-0", "web-1"]
        assert complete(f"orchestr stop -n {namespace} web-0 ", env) == []  # one name only
        assert complete("orchestr exec w", env) == []  # the default namespace holds none
    finally:
        orc("delete", "-f", spec, state_dir=state_dir, check=True)
        assert_nothing_left(namespace, state_dir)


def test_zsh_and_fish_scripts_ask_the_same_question():
    """zsh and fish are not installed on this machine: their scripts are checked to ask what the bash one asks."""
    for shell in ("zsh", "fish"):
        script = subprocess.run([f"{BIN}/orchestr", "completion", shell], capture_output=True, text=True, check=True)
        assert "orchestr __complete" in script.stdout and "__files__" in script.stdout
    out = subprocess.run([f"{BIN}/orchestr", "__complete", "images", ""], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["export", "history", "import", "inspect", "ls", "prune", "pull", "rm"]
