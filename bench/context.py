"""What every scenario shares: subprocesses with the venv first on PATH, images, and probes of orchestr's runtimes."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from harness import Skip

from orchestr.testing import images as mkimage

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin" / "python").exists() else Path(sys.executable).parent

# `sleep` as PID 1 ignores SIGTERM; the trap makes every tool's stop take the same short path.
SLEEP = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]


class Context:
    """One benchmark run: its temp dir, its clean-ups (run last-in first-out, even on failure), its images."""

    def __init__(self, *, quick: bool, run_id: str, work: Path, stack: contextlib.ExitStack):
        self.quick = quick
        self.work = work
        self.stack = stack
        # Names of their own per run, so two runs on one machine never remove each other's things.
        self.run_id = run_id
        self.image = f"orchestr-bench/busybox:{self.run_id}"
        self.ctr_namespace = f"orchestr-bench-{self.run_id}"
        self.state_dir = work / "orchestr-state"
        self.env = {
            **os.environ,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "ORCHESTR_STATE_DIR": str(self.state_dir),
            # orchestr's containerd runtime in a containerd namespace of the run's own, emptied and removed at the end
            "ORCHESTR_CONTAINERD_NAMESPACE": f"{self.ctr_namespace}-orchestr",
        }
        self._cache: dict[str, object] = {}
        self.networks: dict[str, tuple[str, str]] = {}  # runtime -> (network its services use, why not bridge)
        self.notes: list[str] = []  # for the scenario being run; see note()
        stack.callback(self._sweep)

    # -- processes ----------------------------------------------------------------------
    def sh(self, argv: Sequence[str | Path], *, timeout: float = 600, check: bool = True,
           cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(a) for a in argv], capture_output=True, timeout=timeout, check=check,
                              cwd=cwd, env=self.env, stdin=subprocess.DEVNULL)

    def timed(self, argv: Sequence[str | Path], **kw) -> float:
        t0 = time.perf_counter()
        self.sh(argv, **kw)
        return time.perf_counter() - t0

    def orchestr(self, *args: str | Path) -> list[str]:
        return [str(VENV_BIN / "orchestr"), *map(str, args)]

    def tempdir(self, name: str) -> Path:
        path = self.work / name
        path.mkdir(parents=True, exist_ok=False)
        return path

    def once(self, key: str, make):
        """make() the first time key is asked for; a Skip it raises is remembered too."""
        if key not in self._cache:
            try:
                self._cache[key] = make()
            except Skip as e:
                self._cache[key] = e
        value = self._cache[key]
        if isinstance(value, Skip):
            raise value
        return value

    # -- tools and images ---------------------------------------------------------------
    def need(self, *binaries: str) -> None:
        for b in binaries:
            if not shutil.which(b, path=self.env["PATH"]):
                raise Skip(f"{b} is not installed")

    def archive(self) -> Path:
        """A `docker save` archive of busybox-static, tagged self.image."""
        def make() -> Path:
            path = self.work / "busybox.tar"
            # A label of its own gives the image an id of its own: removing another copy of busybox by id
            # (as tests do) must not take the benchmark's image with it.
            mkimage.busybox_image(path, [self.image], labels={"org.orchestr.bench": "1"})
            return path
        return self.once("archive", make)

    def docker_image(self) -> str:
        """self.image in the Docker Engine (removed at the end); loaded again if something else removed it."""
        def make() -> str:
            self.need("docker")
            if self.sh(["docker", "info", "--format", "{{.ServerVersion}}"], check=False).returncode:
                raise Skip("the Docker Engine does not answer")
            self.stack.callback(self.sh, ["docker", "rmi", "-f", self.image], check=False)
            return self.image
        self.once("docker-engine", make)
        if self.sh(["docker", "image", "inspect", self.image], check=False).returncode:
            self.sh(["docker", "load", "-i", self.archive()])
        return self.image

    def ctr_image(self) -> str:
        """self.image, imported into containerd's namespace self.ctr_namespace (emptied and removed at the end)."""
        def make() -> str:
            self.need("ctr")
            if self.sh(["ctr", "--connect-timeout", "2s", "version"], check=False).returncode:
                raise Skip("containerd does not answer")
            self.stack.callback(self.ctr_cleanup)
            self.sh(["ctr", "-n", self.ctr_namespace, "images", "import", self.archive()])
            return f"docker.io/{self.image}"  # containerd stores the normalised name
        return self.once("ctr-image", make)

    def ctr_cleanup(self, namespace: str | None = None) -> None:
        namespace = namespace or self.ctr_namespace
        ctr = ["ctr", "-n", namespace]
        for task in self.sh([*ctr, "tasks", "ls", "-q"], check=False).stdout.decode().split():
            self.sh([*ctr, "tasks", "kill", "-s", "SIGKILL", task], check=False)
            self.sh([*ctr, "tasks", "delete", "-f", task], check=False)
        for c in self.sh([*ctr, "containers", "ls", "-q"], check=False).stdout.decode().split():
            self.sh([*ctr, "containers", "delete", c], check=False)
        images = self.sh([*ctr, "images", "ls", "-q"], check=False).stdout.decode().split()
        if images:
            self.sh([*ctr, "images", "rm", "--sync", *images], check=False)
        self.sh(["ctr", "namespaces", "remove", namespace], check=False)

    # -- orchestr -----------------------------------------------------------------------
    def orchestr_cli(self) -> None:
        """The orchestr command starts; Skip otherwise."""
        def make() -> bool:
            if not (VENV_BIN / "orchestr").exists():
                raise Skip(f"{VENV_BIN / 'orchestr'} is not installed")
            proc = self.sh(self.orchestr("--help"), check=False, timeout=60)
            if proc.returncode:
                raise Skip(f"`orchestr --help` fails: {last_line(proc)}")
            # An editable install leaves the bytecode to the first run, which a PYTHONDONTWRITEBYTECODE in the
            # environment forbids: every command would compile all it loads. pip compiles it at an install.
            self.sh([VENV_BIN / "python", "-m", "compileall", "-q", ROOT / "orchestr", ROOT / "plugins"], check=False,
                    timeout=300)
            return True
        self.once("orchestr-cli", make)

    def orchestr_runtime(self, name: str) -> str:
        """The ref runtime `name` knows self.image by; Skip while that runtime cannot run a container here."""
        def make() -> str:
            self.orchestr_cli()
            installed = self.sh([VENV_BIN / "python", "-c", "import orchestr.plugins as p; print(*p.runtimes())"],
                                check=False, timeout=60)
            names = installed.stdout.decode().split()
            if installed.returncode:
                raise Skip(f"orchestr's plugins do not load: {last_line(installed)}")
            if name not in names:
                raise Skip(f"orchestr has no {name} runtime yet (runtimes: {', '.join(names) or 'none'})")
            if name == "containerd":  # runs last: after orchestr removed its containers and image
                self.stack.callback(self.ctr_cleanup, self.env["ORCHESTR_CONTAINERD_NAMESPACE"])
            if name == "docker":
                self.docker_image()
            else:
                self.stack.callback(self.sh, self.orchestr("images", "rm", "--runtime", name, "--force", self.image),
                                    check=False)
                proc = self.sh(self.orchestr("images", "import", "--runtime", name, self.archive()), check=False)
                if proc.returncode:
                    raise Skip(f"`orchestr images import --runtime {name}` fails: {last_line(proc)}")
            problem = self._probe(name, "bridge")
            if problem and name != "docker" and not self._probe(name, "none"):
                # A runtime without bridge networking yet is still measured, on network none, and says so.
                self.networks[name] = ("none", problem)
            elif problem:
                raise Skip(f"the {name} runtime cannot run a container here: {problem}")
            return self.image
        self.once(f"runtime-{name}", make)
        return self.docker_image() if name == "docker" else self.image

    def _probe(self, runtime: str, network: str) -> str | None:
        """Why runtime cannot run `true` on network, or None when it can."""
        argv = self.orchestr("run", "--rm", "--runtime", runtime, "--network", network, "-n", self.namespace("probe"),
                             self.image, "true")
        proc = self.sh(argv, check=False, timeout=120)
        self.orchestr_delete_namespace(self.namespace("probe"))  # its bridge too
        return None if proc.returncode == 0 else last_line(proc)

    def note(self, text: str) -> None:
        """A remark for the scenario being run, printed under its table."""
        if text not in self.notes:
            self.notes.append(text)

    def namespace(self, name: str) -> str:
        """An orchestr namespace (or compose project) of this run's own."""
        return f"bench-{self.run_id}-{name}"

    def orchestr_delete_namespace(self, namespace: str) -> None:
        """Removes whatever orchestr left in namespace, through orchestr and, for docker, by label."""
        self.sh(self.orchestr("delete", "-n", namespace, "--all"), check=False)
        if shutil.which("docker"):
            left = self.sh(["docker", "ps", "-aq", "--filter", f"label=orchestr.namespace={namespace}"],
                           check=False).stdout.decode().split()
            if left:
                self.sh(["docker", "rm", "-f", *left], check=False)

    def _sweep(self) -> None:
        """Last clean-up before the temp dir goes: processes still using orchestr's state dir, and mounts under it."""
        from orchestr_native.supervisor.client import SupervisorClient

        from orchestr_native.network import Network

        state = str(self.state_dir)
        for native in self.work.glob("*/native"):  # idle supervisors would otherwise stay for their minute
            SupervisorClient(str(native)).ask({"op": "quit-if-idle"})
            for record in native.glob("network/*/bridge.json"):  # bridges outlive their namespace's containers
                with contextlib.suppress(OSError, ValueError, KeyError):
                    Network(native).remove(json.loads(record.read_text())["namespace"])
        deadline = time.monotonic() + 10
        while (left := _processes_mentioning(state)) and time.monotonic() < deadline:
            time.sleep(0.2)  # a supervisor exits once it has answered, or once its containers are gone
        for pid in left:
            print(f"warning: process {pid} still uses {state} after the benchmark; ending it", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        for mount in reversed(_mounts_under(str(self.work))):
            print(f"warning: {mount} is still mounted after the benchmark; unmounting it", file=sys.stderr)
            subprocess.run(["umount", "-l", mount], capture_output=True)

    def portal(self):
        """An event loop in a thread, for timing orchestr's async library from this synchronous harness."""
        def make():
            import anyio.from_thread

            return self.stack.enter_context(anyio.from_thread.start_blocking_portal())
        return self.once("portal", make)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def _mounts_under(root: str) -> list[str]:
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p == root or p.startswith(root + "/")]


def last_line(proc: subprocess.CompletedProcess) -> str:
    text = (proc.stderr or proc.stdout or b"").decode(errors="replace").strip()
    return text.splitlines()[-1] if text else f"exit status {proc.returncode}"


def new_run_id() -> str:
    """Six hex digits naming one run's things; ORCHESTR_BENCH_RUN_ID chooses them (a test then finds what the run left)."""
    return os.environ.get("ORCHESTR_BENCH_RUN_ID") or secrets.token_hex(3)


@contextlib.contextmanager
def workdir(run_id: str, keep: bool = False) -> Iterator[Path]:
    import tempfile

    path = Path(tempfile.gettempdir()) / f"orchestr-bench-{run_id}"
    path.mkdir(mode=0o700)
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)
