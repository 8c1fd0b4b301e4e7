"""Pull and import progress as the command line shows it: through a pty, a block of one line per layer (status, bar,
bytes, rate) redrawn in place; through pipes, one line per layer done; nothing with -o json or --quiet. On the native,
containerd and docker runtimes, from a real registry on loopback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile

import pytest
from registry import running_registry
from test_cli_comforts import on_a_terminal
from test_native_cli import ORCHESTR, TEST_IMAGE, _env, assert_nothing_left, service, write

from orchestr.testing import images as mkimage

pytestmark = [pytest.mark.registry,
              pytest.mark.skipif(os.geteuid() != 0, reason="the native runtime needs root")]

REDRAW = re.compile(rb"\x1b\[(\d+)F\x1b\[J")  # up N lines, then erase to the end: the block drawn again in place


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """An image of three layers in a registry on loopback: busybox, 4 MiB that compress to nothing less (so its
    download comes in several reports), and a small one; and the short ids of its layer blobs, big one second."""
    d = tmp_path_factory.mktemp("progress")
    archive = d / "big.tar"
    mkimage.write_docker_archive(archive, [mkimage.busybox_layer().bytes(),
                                           mkimage.Layer().file("big", os.urandom(4 << 20)).bytes(),
                                           mkimage.Layer().file("small", "small\n").bytes()], ["big:1"])
    with running_registry(d / "registry") as reg:
        reg.push(archive, "progress/big:1")
        raw, _ = reg.manifest("progress/big", "1")
        shorts = [layer["digest"].removeprefix("sha256:")[:12] for layer in json.loads(raw)["layers"]]
        yield f"{reg.host}/progress/big:1", shorts


@pytest.fixture(autouse=True)
def no_credentials(tmp_path, monkeypatch):
    path = tmp_path / "docker-config"
    path.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(path))


def frames(out: bytes) -> list[str]:
    """The screens a live block drew, each the text between two redraws."""
    return [part.decode().replace("\r\n", "\n") for part in REDRAW.split(out)[::2]]


def assert_live(out: bytes, ref: str, shorts: list[str], rate_of: str | None) -> None:
    assert REDRAW.search(out), out  # drawn again in place, not scrolled
    text = out.decode().replace("\r\n", "\n")
    for short in shorts:  # every layer ends done (or was there), with its size
        assert re.search(rf"^  {short}: (Done|Exists)\b", text, re.M), text
    if rate_of:  # a frame with a bar, bytes of bytes and a rate
        assert re.search(rf"^  {rate_of}: Downloading \[=*>? *\] [\d.]+[kM]?B/[\d.]+MB [\d.]+[kM]?B/s$", text,
                         re.M), text
    assert f"{ref}:\n" in text


def plain_lines(stderr: str, ref: str, shorts: list[str], statuses: str = "Done") -> None:
    lines = stderr.splitlines()
    assert sorted(line.split(": ")[1] for line in lines) == sorted(shorts), stderr
    assert all(re.fullmatch(rf"{re.escape(ref)}: [0-9a-f]{{12}}: ({statuses}) +[\d.]+[kM]?B", line)
               for line in lines), stderr
    assert "\x1b" not in stderr


def test_native_pull_on_a_terminal_in_a_pipe_as_json_and_quiet(pushed, tmp_path):
    ref, shorts = pushed
    code, out = on_a_terminal([ORCHESTR, "images", "pull", ref], _env(tmp_path / "a"))
    assert code == 0, out
    assert_live(out, ref, shorts, rate_of=shorts[1])
    assert frames(out)[0].startswith(f"{ref}:\n")  # the first screen: the image, then its layers waiting
    assert out.decode().rstrip().endswith(f"{ref}: sha256:" + out.decode().rstrip().rsplit("sha256:", 1)[1])

    piped = subprocess.run([ORCHESTR, "images", "pull", ref], capture_output=True, text=True, env=_env(tmp_path / "b"))
    assert piped.returncode == 0, piped.stderr
    plain_lines(piped.stderr, ref, shorts)
    assert piped.stdout.startswith(f"{ref}: sha256:")
    digest = piped.stdout.split(": ")[1].strip()

    for argv, state in ((["-o", "json"], "c"), (["-q"], "d")):
        proc = subprocess.run([ORCHESTR, "images", "pull", *argv, ref], capture_output=True, text=True,
                              env=_env(tmp_path / state))
        assert (proc.returncode, proc.stderr) == (0, "")
        if argv == ["-q"]:
            assert proc.stdout == f"{digest}\n"
        else:
            assert json.loads(proc.stdout)["digest"] == digest

    code, out = on_a_terminal([ORCHESTR, "images", "pull", ref], _env(tmp_path / "a"))  # all there: nothing moves
    assert code == 0 and all(f"  {s}: Exists " in out.decode() for s in shorts), out


def test_native_import_on_a_terminal_and_in_a_pipe(busybox_archive, tmp_path):
    layout = tmp_path / "bb-oci.tar"  # an OCI layout: gzipped blobs, loaded, then unpacked
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-compress", f"docker-archive:{busybox_archive}",
                    f"oci-archive:{layout}:bb:1"], check=True, capture_output=True)
    [blob] = [m.name.rsplit("/", 1)[1][:12] for m in tarfile.open(layout)
              if m.name.startswith("blobs/") and m.size > 100_000]  # the layer
    code, out = on_a_terminal([ORCHESTR, "images", "import", str(layout)], _env(tmp_path / "a"))
    assert code == 0, out
    assert REDRAW.search(out) and re.search(rf"  {blob}: Loading +\[> +\] 0B/[\d.]+[kM]B".encode(), out), out
    assert re.search(rf"  {blob}: Done +[\d.]+[kM]B\r\n".encode(), out), out
    piped = subprocess.run([ORCHESTR, "images", "import", str(busybox_archive)], capture_output=True, text=True,
                           env=_env(tmp_path / "b"))
    assert piped.returncode == 0 and piped.stdout.startswith("imported "), piped.stderr
    [line] = piped.stderr.splitlines()
    assert re.fullmatch(r"\S+: [0-9a-f]{12}: Done +[\d.]+MB", line), piped.stderr
    quiet = subprocess.run([ORCHESTR, "images", "import", "-q", str(busybox_archive)], capture_output=True,
                           text=True, env=_env(tmp_path / "c"))
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout.startswith("sha256:")


def test_apply_shows_the_pulls_it_does_above_its_outcomes(pushed, tmp_path, namespace):
    ref, shorts = pushed
    state = tmp_path / "state"
    spec = write(tmp_path / "app.yaml", service("web", namespace, replicas=2).replace(TEST_IMAGE, ref))
    try:
        code, out = on_a_terminal([ORCHESTR, "apply", "-f", spec], {**_env(state), "NO_COLOR": "1"})
        assert code == 0, out
        assert_live(out, ref, shorts, rate_of=shorts[1])
        text = out.decode().replace("\r\n", "\n")
        # the plan first, the pull's last screen, then the outcomes below it, never drawn over
        assert text.index("plan: 2 actions") < text.rindex(f"  {shorts[1]}: Done ") < text.index("  done     create")
        assert text.endswith("2 done, 0 failed, 0 skipped\n")
        quiet = subprocess.run([ORCHESTR, "apply", "-q", "-f", spec], capture_output=True, text=True,
                               env=_env(tmp_path / "quiet"))
        assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    finally:
        for where in (state, tmp_path / "quiet"):
            subprocess.run([ORCHESTR, "delete", "-n", namespace, "--all"], env=_env(where), capture_output=True)
            assert_nothing_left(namespace, where)


def test_containerd_pull_on_a_terminal_and_in_a_pipe(pushed, tmp_path, containerd_namespace):
    ref, shorts = pushed
    env = {**_env(tmp_path / "state"), "ORCHESTR_RUNTIME": "containerd"}
    try:
        code, out = on_a_terminal([ORCHESTR, "images", "pull", ref], env)
        assert code == 0, out
        assert_live(out, ref, shorts, rate_of=shorts[1])
        assert re.search(rf"  {shorts[1]}: Extracting +[\d.]+MB\r\n".encode(), out), out
        subprocess.run([ORCHESTR, "images", "rm", ref], env=env, check=True, capture_output=True)
        piped = subprocess.run([ORCHESTR, "images", "pull", ref], capture_output=True, text=True, env=env)
        assert piped.returncode == 0, piped.stderr
        plain_lines(piped.stderr, ref, shorts, "Done|Exists")
    finally:
        subprocess.run([ORCHESTR, "images", "rm", ref], env=env, capture_output=True)


def test_docker_pull_on_a_terminal_and_in_a_pipe(pushed, tmp_path, docker_engine):
    ref, shorts = pushed
    env = {**_env(tmp_path / "state"), "ORCHESTR_RUNTIME": "docker"}
    try:
        code, out = on_a_terminal([ORCHESTR, "images", "pull", ref], env)
        assert code == 0, out
        assert_live(out, ref, shorts, rate_of=None)  # the engine's reports come by time: a rate may not show
        assert re.search(rf"  {shorts[1]}: Done +[\d.]+MB\r\n".encode(), out), out
        subprocess.run(["docker", "rmi", ref], check=True, capture_output=True)
        piped = subprocess.run([ORCHESTR, "images", "pull", ref], capture_output=True, text=True, env=env)
        assert piped.returncode == 0, piped.stderr
        assert sorted(line.split(": ")[1] for line in piped.stderr.splitlines()) == sorted(shorts), piped.stderr
        assert "\x1b" not in piped.stderr
    finally:
        subprocess.run(["docker", "rmi", ref], capture_output=True)


def test_containerd_import_on_a_terminal_and_in_a_pipe(busybox_archive, tmp_path, containerd_namespace):
    env = {**_env(tmp_path / "state"), "ORCHESTR_RUNTIME": "containerd"}
    layout = tmp_path / "bb-oci.tar"  # an OCI layout: its gzipped layer loaded into the content store, then unpacked
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-compress", f"docker-archive:{busybox_archive}",
                    f"oci-archive:{layout}:orchestr-progress/bb:1"], check=True, capture_output=True)
    [blob] = [m.name.rsplit("/", 1)[1][:12] for m in tarfile.open(layout)
              if m.name.startswith("blobs/") and m.size > 100_000]  # the layer
    try:
        code, out = on_a_terminal([ORCHESTR, "images", "import", str(layout)], env)
        assert code == 0, out
        assert REDRAW.search(out), out
        assert re.search(rf"  {blob}: Loading +\[=+>? *\] [\d.]+[kM]B/[\d.]+[kM]B".encode(), out), out
        # unpacked then, or already by an image of the same layer the session's containerd namespace has
        assert re.search(rf"{re.escape(str(layout))}:\r\n  {blob}: (Done|Exists) +[\d.]+[kM]B\r\n".encode(), out), out
        subprocess.run([ORCHESTR, "images", "rm", "orchestr-progress/bb:1"], env=env, check=True, capture_output=True)
        piped = subprocess.run([ORCHESTR, "images", "import", str(layout)], capture_output=True, text=True, env=env)
        assert piped.returncode == 0, piped.stderr
        [line] = piped.stderr.splitlines()
        assert re.fullmatch(rf"{re.escape(str(layout))}: {blob}: (Done|Exists) +[\d.]+[kM]B", line), piped.stderr
    finally:
        subprocess.run([ORCHESTR, "images", "rm", "orchestr-progress/bb:1"], env=env, capture_output=True)
