"""Runtime plugins: built-ins come through the entry-point group, and an out-of-tree plugin installs and runs."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from orchestr import plugins
from orchestr.config import Config
from orchestr.errors import Conflict, Timeout
from orchestr.model import L_NAMESPACE, ContainerSpec, EventAction, State
from orchestr.runtime import OPTIONAL, Capabilities, ContainerRuntime, ImageStore, Runtime, supports

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "orchestr-hostproc"
ORCHESTR = Path(sys.executable).parent / "orchestr"  # the console script pip made next to this interpreter


def orchestr(*args: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ORCHESTR), *map(str, args)], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        timeout=120,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{proc.args[1:]} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def base_env(state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ORCHESTR_RUNTIME", "PYTHONPATH")}
    env["ORCHESTR_STATE_DIR"] = str(state_dir)
    return env


# -- built-in runtimes -------------------------------------------------------------------------------
def test_builtin_docker_runtime_is_found_through_the_entry_point_group():
    points = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=plugins.ENTRY_POINT_GROUP)}
    assert points.get("docker") == "orchestr_docker"
    info = plugins.runtimes()["docker"]
    assert info.plugin == "orchestr_docker"
    assert info.package == f"orchestr {importlib.metadata.version('orchestr')}"


def test_core_never_imports_a_plugin_by_name():
    entry_points = importlib.metadata.entry_points(group=plugins.ENTRY_POINT_GROUP)
    plugin_modules = {ep.value.split(":")[0] for ep in entry_points} | {"orchestr_docker", "orchestr_native"}
    offenders = []
    for path in sorted((ROOT / "orchestr").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [node.value]  # importlib.import_module("orchestr_docker") and the like
            else:
                continue
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno}: {name}" for name in names
                          if name.split(".")[0] in plugin_modules]
    assert not offenders


def _plugin_module(name: str, source: str):
    """A plugin module made from source, as an installed plugin would be imported."""
    import types

    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


REPLACEMENT = """
import pluggy
hookimpl = pluggy.HookimplMarker("orchestr")

def _open(config):
    raise RuntimeError("never opened here")

@hookimpl(tryfirst=True)
def orchestr_runtimes():
    return {"docker": _open}
"""


def test_a_tryfirst_plugin_replaces_a_builtin_whatever_the_registration_order():
    for first in (True, False):
        pm = plugins.new_plugin_manager(register_entry_points=not first)
        replacement = _plugin_module("orchestr_replacement", REPLACEMENT)
        pm.register(replacement, name="replacement")
        if first:  # registered before the built-ins, which pluggy would otherwise call first
            pm = _with_entry_points(pm)
        found = plugins.runtimes(pm)
        assert found["docker"].plugin == "orchestr_replacement"
        assert found["docker"].factory is replacement._open
        assert found["native"].plugin == "orchestr_native"
        shadowed = [o for o in plugins.offers(pm) if o.shadowed_by]
        assert [(o.name, o.plugin, o.shadowed_by) for o in shadowed] == [
            ("docker", "orchestr_docker", "orchestr_replacement")]


def _with_entry_points(pm):
    for name, value, _ in plugins._entry_points(plugins.ENTRY_POINT_GROUP):
        if not pm.has_plugin(name):
            pm.register(importlib.import_module(value.split(":")[0]), name=name)
    return pm


def test_a_hookwrapper_sees_and_extends_the_offers():
    pm = plugins.new_plugin_manager()
    wrapper = _plugin_module("orchestr_wrapper", """
import pluggy
hookimpl = pluggy.HookimplMarker("orchestr")

def _open(config):
    raise RuntimeError("never opened here")

@hookimpl(wrapper=True)
def orchestr_runtimes():
    offered = yield
    return offered + [{"extra": _open}]
""")
    pm.register(wrapper, name="wrapper")
    found = plugins.runtimes(pm)
    assert {"native", "docker", "extra"} <= set(found)
    assert found["extra"].plugin == "orchestr_wrapper" and found["extra"].package == "(not packaged)"


def test_trace_switch_logs_every_hook_call_on_stderr(tmp_path):
    env = base_env(tmp_path / "state")
    quiet = orchestr("plugins", env=env)
    assert "plugin hook" not in quiet.stderr
    traced = orchestr("plugins", env=dict(env, ORCHESTR_TRACE_PLUGINS="1"))
    assert traced.stdout == quiet.stdout
    assert "orchestr: plugin hook orchestr_runtimes() calls " in traced.stderr
    assert "orchestr: plugin hook orchestr_runtimes returned [" in traced.stderr


def test_an_installed_plugin_replacing_docker_is_listed_with_the_builtin_shadowed(tmp_path):
    site = tmp_path / "site"
    (site / "orchestr_replacement-1.0.dist-info").mkdir(parents=True)
    (site / "orchestr_replacement-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: orchestr-replacement\nVersion: 1.0\n\n")
    (site / "orchestr_replacement-1.0.dist-info" / "entry_points.txt").write_text(
        "[orchestr]\nreplacement = orchestr_replacement\n")
    (site / "orchestr_replacement.py").write_text(REPLACEMENT)
    env = dict(base_env(tmp_path / "state"), PYTHONPATH=str(site))
    lines = ok(orchestr("plugins", env=env)).splitlines()[1:]
    rows = [line.split() for line in lines]
    assert ["docker", "orchestr_replacement", "orchestr-replacement", "1.0"] in [r[:4] for r in rows]
    assert [r for r in rows if r[:2] == ["docker", "orchestr_docker"]][0][-3:] == ["shadowed", "by",
                                                                                   "orchestr_replacement"]


def example_runtime(state_dir: Path):
    """The example's runtime, loaded from its source file without installing it."""
    spec = importlib.util.spec_from_file_location("orchestr_hostproc_example", EXAMPLE / "orchestr_hostproc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.orchestr_runtimes()["hostproc"](Config(state_dir=state_dir))


def _verbs(protocol: type) -> list[str]:
    return [name for name, _ in inspect.getmembers(protocol, inspect.isfunction) if not name.startswith("_")]


def _matches(protocol: type, runtime: object, verb: str) -> None:
    """runtime's verb takes the protocol's parameters, and is async where the protocol's is."""
    expected, got = getattr(protocol, verb), getattr(type(runtime), verb)
    assert list(inspect.signature(got).parameters) == list(inspect.signature(expected).parameters), verb
    if inspect.iscoroutinefunction(expected):
        assert inspect.iscoroutinefunction(got), f"{verb} must be async def"
    else:  # events must subscribe when called, which an async generator function cannot do
        assert not inspect.iscoroutinefunction(got), f"{verb} must not be async def"
        if verb == "events":
            assert not inspect.isasyncgenfunction(got), "events() must subscribe when called, not when first iterated"


@pytest.mark.parametrize("name", ["hostproc", "native", "docker"])
def test_runtime_has_every_required_verb_and_each_optional_one_it_declares(name, tmp_path):
    runtime = example_runtime(tmp_path) if name == "hostproc" else plugins.open_runtime(name, Config(state_dir=tmp_path))
    assert isinstance(runtime, Runtime) and runtime.name == name
    assert isinstance(runtime.capabilities, Capabilities)
    required = {v: p for p in (ContainerRuntime, ImageStore) for v in _verbs(p)}
    assert {"create", "start", "stop", "wait", "events", "reattach", "ensure_image"} <= set(required)
    assert not set(required) & {v for p in OPTIONAL.values() for v in _verbs(p)}
    for verb, protocol in required.items():
        _matches(protocol, runtime, verb)
    for capability, protocol in OPTIONAL.items():
        declared = getattr(runtime.capabilities, capability)
        assert supports(runtime, capability) is declared, capability
        if declared:
            for verb in _verbs(protocol):
                _matches(protocol, runtime, verb)


def test_a_runtime_declaring_a_verb_it_lacks_is_not_taken_at_its_word(tmp_path):
    runtime = example_runtime(tmp_path)
    runtime.capabilities = Capabilities(pause=True, stats=True)  # it has no stats verb
    assert supports(runtime, "pause") and not supports(runtime, "stats")


@pytest.mark.anyio
async def test_example_runtime_stops_pauses_waits_and_reports(tmp_path, namespace):
    rt = example_runtime(tmp_path)

    async def make(name: str, *argv: str) -> str:
        spec = ContainerSpec(name=name, namespace=namespace, image="none", labels={L_NAMESPACE: namespace},
                             command=argv)
        c = await rt.create(spec)
        assert c.state is State.CREATED
        await rt.start(c.id)
        return c.id

    seen: list[tuple[str, str]] = []

    async def watch() -> None:
        async for event in rt.events():
            seen.append((event.name, event.action))

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await anyio.sleep(0)  # the watcher takes its first snapshot before anything exists
            polite = await make("polite-0", "sleep", "300")
            stubborn = await make("stubborn-0", "sh", "-c", "trap '' TERM; sleep 300 & wait")
            quick = await make("quick-0", "sh", "-c", "echo out; echo err >&2; exit 3")

            assert await rt.wait(quick) == 3
            assert [line.data async for line in rt.logs(quick)] == [b"out\n", b"err\n"]

            await rt.pause(polite)
            paused = await rt.inspect(polite)
            assert paused.state is State.PAUSED and _stat(paused.pid)[0] == "T"
            await rt.resume(polite)
            assert (await rt.inspect(polite)).state is State.RUNNING

            await rt.stop(polite, timeout=30)
            assert await rt.wait(polite) == 128 + signal.SIGTERM
            await rt.stop(stubborn, timeout=0.2)  # it ignores SIGTERM: killed when the grace period ends
            assert (await rt.inspect(stubborn)).exit_code == 128 + signal.SIGKILL

            with anyio.fail_after(10):
                while not {("polite-0", "die"), ("quick-0", "die")} <= set(seen):
                    await anyio.sleep(0.1)
            tg.cancel_scope.cancel()
    finally:
        for c in await rt.list():
            await rt.delete(c.id, force=True)
    assert [action for name, action in seen if name == "quick-0"] == ["create", "start", "die"]
    assert await rt.list(namespace) == []
    assert list((tmp_path / "hostproc").iterdir()) == []


@pytest.mark.anyio
async def test_example_runtime_events_begin_at_the_call_and_it_signals_and_times_out_execs(tmp_path, namespace):
    rt = example_runtime(tmp_path)
    events = rt.events()  # subscribed here: what happens before the first iteration is in the stream
    spec = ContainerSpec(name="hup-0", namespace=namespace, image="none", labels={L_NAMESPACE: namespace},
                         command=("sh", "-c", "trap 'echo got HUP' HUP; while :; do sleep 0.1; done"))
    c = await rt.create(spec)
    await rt.start(c.id)
    try:
        seen = []
        with anyio.fail_after(30):
            async for event in events:
                seen.append(event.action)
                if event.action is EventAction.START:
                    break
        assert seen == [EventAction.CREATE, EventAction.START]

        await rt.signal(c.id, "HUP")
        with anyio.fail_after(30):
            while b"got HUP\n" not in [line.data async for line in rt.logs(c.id)]:
                await anyio.sleep(0.05)
        assert (await rt.inspect(c.id)).state is State.RUNNING

        marker = f"orchestr-test-{namespace}"
        with pytest.raises(Timeout, match="deadline") as raised:
            await rt.exec(c.id, ["sh", "-c", f"sleep 300 # {marker}"], timeout=0.3)
        assert (raised.value.runtime, raised.value.container) == ("hostproc", c.id)
        left = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, marker)]
        assert left == [], "the exec'd command outlived its deadline"
        assert (await rt.exec(c.id, ["echo", "in time"], timeout=30)).stdout == b"in time\n"

        await rt.stop(c.id, timeout=0)
        with pytest.raises(Conflict, match="not running"):
            await rt.signal(c.id, "HUP")
    finally:
        await events.aclose()
        for x in await rt.list():
            await rt.delete(x.id, force=True)


def _cmdline_has(pid: str, marker: str) -> bool:
    try:
        return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


# -- the out-of-tree example, installed for real --------------------------------------------------------
@pytest.fixture(scope="module")
def hostproc_site(tmp_path_factory) -> Path:
    """The example plugin installed by pip into a directory of its own, for PYTHONPATH."""
    base = tmp_path_factory.mktemp("hostproc")
    source = shutil.copytree(EXAMPLE, base / "src")  # pip builds in place: keep the checkout clean
    site = base / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--target", str(site), str(source)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )
    assert pip.returncode == 0, f"pip could not install {EXAMPLE}:\n{pip.stderr}"
    return site


def _process_tree(pid: int) -> dict[int, str]:
    """pid -> start time of pid and all its descendants, read from /proc."""
    found, todo = {}, [pid]
    while todo:
        p = todo.pop()
        stat = _stat(p)
        if stat:
            found[p] = stat[1]
            children = Path(f"/proc/{p}/task/{p}/children")
            todo += [int(c) for c in children.read_text().split()] if children.exists() else []
    return found


def _stat(pid: int) -> tuple[str, str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return fields[0], fields[19]


def _running(pid: int, start: str) -> bool:
    stat = _stat(pid)
    return bool(stat) and stat[0] not in "ZX" and stat[1] == start


@pytest.fixture
def hostproc_env(hostproc_site, tmp_path):
    env = base_env(tmp_path / "state")
    env["PYTHONPATH"] = str(hostproc_site)
    yield env
    # Whatever a failed test left running is killed here, so no process outlives the test.
    for record in (tmp_path / "state" / "hostproc").glob("*/record.json"):
        rec = json.loads(record.read_text())
        if rec.get("pid") and _running(rec["pid"], rec["pid_start"]):
            os.killpg(rec["pid"], signal.SIGKILL)


def test_plugins_lists_the_installed_example_with_its_package(hostproc_env, tmp_path):
    without = ok(orchestr("plugins", env=base_env(tmp_path / "state")))
    assert "hostproc" not in without
    rows = {line.split()[0]: line.split() for line in ok(orchestr("plugins", env=hostproc_env)).splitlines()[1:]}
    assert rows["hostproc"][1:4] == ["orchestr_hostproc", "orchestr-hostproc", "0.1.0"]
    assert rows["docker"][1:3] == ["orchestr_docker", "orchestr"]


def test_apply_get_reapply_delete_with_the_example_runtime(hostproc_env, namespace, tmp_path):
    spec = tmp_path / "sleepers.yaml"
    spec.write_text(f"""\
apiVersion: orchestr/v1
kind: Service
metadata:
  name: sleeper
  namespace: {namespace}
spec:
  image: busybox:latest
  command: ["sh", "-c", "echo hello from $GREETER; exec sleep 300"]
  env:
    GREETER: hostproc
  replicas: 2
""")
    ok(orchestr("apply", "-f", spec, "--runtime", "hostproc", env=hostproc_env))

    got = json.loads(ok(orchestr("get", "-n", namespace, "-o", "json", env=hostproc_env)))
    assert sorted(c["name"] for c in got) == ["sleeper-0", "sleeper-1"]
    assert {(c["runtime"], c["state"], c["service"]) for c in got} == {("hostproc", "running", "sleeper")}
    trees = {c["name"]: _process_tree(c["pid"]) for c in got}
    for name, tree in trees.items():
        cmdlines = [Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0") for p in tree]
        assert [b"sleep", b"300", b""] in cmdlines, name

    assert b"hello from hostproc\n" in ok(orchestr("logs", "-n", namespace, "sleeper-1", env=hostproc_env)).encode()
    greeter = ok(orchestr("exec", "-n", namespace, "sleeper-0", "--", "printenv", "GREETER", env=hostproc_env))
    assert greeter == "hostproc\n"

    again = ok(orchestr("apply", "-f", spec, "--runtime", "hostproc", env=hostproc_env))
    assert "nothing to do" in again
    after = json.loads(ok(orchestr("get", "-n", namespace, "-o", "json", env=hostproc_env)))
    assert {(c["id"], c["pid"]) for c in after} == {(c["id"], c["pid"]) for c in got}

    ok(orchestr("delete", "-n", namespace, "--all", env=hostproc_env))
    assert json.loads(ok(orchestr("get", "-n", namespace, "-o", "json", env=hostproc_env))) == []
    left = [p for tree in trees.values() for p, start in tree.items() if _running(p, start)]
    assert not left, f"processes still running after delete: {left}"
    assert [p.name for p in (tmp_path / "state" / "hostproc").iterdir() if p.is_dir()] == []


def test_a_spec_asking_what_the_runtime_cannot_do_fails_in_one_line_and_changes_nothing(hostproc_env, namespace,
                                                                                          tmp_path):
    spec = tmp_path / "limited.yaml"
    spec.write_text(f"""\
apiVersion: orchestr/v1
kind: Service
metadata: {{name: limited, namespace: {namespace}}}
spec:
  image: busybox:latest
  command: [sleep, "300"]
  resources: {{memory: 64Mi}}
""")
    for verb in ("apply", "diff"):
        proc = orchestr(verb, "-f", spec, "--runtime", "hostproc", env=hostproc_env)
        assert proc.returncode != 0
        assert proc.stderr == (f"orchestr: {spec}:7: spec.resources: the hostproc runtime cannot enforce resource "
                               "limits\n"), proc.stderr
    assert json.loads(ok(orchestr("get", "-n", namespace, "-o", "json", env=hostproc_env))) == []
    assert ok(orchestr("history", env=hostproc_env)) == ""


def test_unknown_runtime_is_one_clear_line(tmp_path):
    spec = tmp_path / "one.yaml"
    spec.write_text("apiVersion: orchestr/v1\nkind: Service\nmetadata: {name: one}\nspec: {image: busybox:latest}\n")
    proc = orchestr("apply", "-f", spec, "--runtime", "nope", env=base_env(tmp_path / "state"))
    assert proc.returncode != 0
    assert "unknown runtime 'nope'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
