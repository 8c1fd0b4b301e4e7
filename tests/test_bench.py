"""The benchmark harness: alternation and failure handling, and a quick run that writes well-formed results.

Timings and ratios are never asserted: only the shape of what the harness writes, and that it leaks nothing.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Fast scenarios: anchors on every engine this machine has (runc, crun, containerd, Docker), the
# in-process planner, CLI start-up, and the cri runtime on a containerd of the run's own.
SCENARIOS = ["lifecycle", "planner", "startup", "cri"]
ANCHORS_THAT_MUST_RUN = {
    "lifecycle": ["runc run (bundle)", "crun run (bundle)", "ctr run --rm", "docker run --rm"],
    "planner": ["orchestr.planner.plan"],
    "startup": ["docker-compose --help"],
    "cri": ["ctr run --rm", "docker-compose"],
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load_harness():
    spec = importlib.util.spec_from_file_location("bench_harness", ROOT / "bench" / "harness.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_contenders_alternate_after_warmup_and_failures_stay_reported():
    h = load_harness()
    calls: list[str] = []
    cleaned: list[str] = []

    def contender(tool, values, versus=()):
        it = iter(values)

        def prepare():
            class Guard:
                def __enter__(self):
                    return lambda: (calls.append(tool), next(it))[1]

                def __exit__(self, *exc):
                    cleaned.append(tool)

            return Guard()
        return h.Contender(tool, prepare, versus=versus)

    def skipped():
        raise h.Skip("not here yet")

    broken = iter([1.0])

    def explode():
        if next(broken, None) is None:
            raise RuntimeError("boom")
        return 1.0

    groups = h.compare("case", [
        contender("a", [9.0, 1.0, 2.0, 3.0]),
        contender("b", [{"up": 9.0}, {"up": 4.0}, {"up": 5.0}, {"up": 6.0}], versus=("a",)),
        h.Contender("c", skipped),
        h.Contender("d", lambda: h.simple(explode)),
    ], repeat=3, warmup=1)

    assert calls == ["a", "b"] * 4
    assert sorted(cleaned) == ["a", "b"]
    by_case = {g["case"]: {s["tool"]: s for s in g["series"]} for g in groups}
    assert set(by_case) == {"case", "case: up"}
    assert by_case["case"]["a"]["samples"] == [1.0, 2.0, 3.0]
    assert by_case["case: up"]["b"]["samples"] == [4.0, 5.0, 6.0]
    assert by_case["case: up"]["b"]["role"] == "anchor"
    for rows in by_case.values():
        assert rows["c"]["status"] == "skipped" and rows["c"]["reason"] == "not here yet"
        assert rows["d"]["status"] == "failed" and "boom" in rows["d"]["reason"]
        assert rows["d"]["samples"] == []


def test_percentiles_interpolate_between_ranks():
    h = load_harness()
    s = h.summary([4.0, 1.0, 3.0, 2.0, 5.0])
    assert (s["median"], s["min"], s["max"]) == (3.0, 1.0, 5.0)
    assert s["p10"] == pytest.approx(1.4) and s["p90"] == pytest.approx(4.6)
    assert h.summary([]) is None


def leftovers(run_id: str) -> dict[str, list[str]]:
    """What the benchmark run named run_id could leave behind: containers, images, containerd's namespace, temp
    dirs, bridges, its cri containerd; everything it makes carries the run id, so other runs on the host do not count."""
    def out(argv):
        return [x for x in subprocess.run(argv, capture_output=True, text=True).stdout.split() if run_id in x]

    work = f"{tempfile.gettempdir()}/orchestr-bench-{run_id}"
    return {
        "docker containers": out(["docker", "ps", "-a", "--format", "{{.Names}}"]),
        "docker images": out(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"]),
        "docker networks": out(["docker", "network", "ls", "--format", "{{.Name}}"]),
        "ctr namespaces": out(["ctr", "namespaces", "ls", "-q"]),
        "temp dirs": [work] if Path(work).exists() else [],
        # the native runtime's bridges, kept after their namespace's containers: each names its state dir
        "orchestr bridges": [b.name for b in Path("/run/orchestr/bridges").glob("*") if work in _text(b)],
        # the cri scenario's own containerd, by its config's path in the run's temp dir
        "cri containerds": subprocess.run(["pgrep", "-f", f"containerd --config {work}/"],
                                          capture_output=True, text=True).stdout.split(),
    }


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:  # removed meanwhile
        return ""


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    for tool in ("docker", "ctr", "runc", "crun", "docker-compose"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed; run scripts/setup.sh", pytrace=False)
    run_id = secrets.token_hex(3)
    before = leftovers(run_id)
    out = tmp_path_factory.mktemp("bench-out")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--only", *SCENARIOS, "--out", str(out)],
        capture_output=True, text=True, timeout=900, cwd=ROOT, env={**os.environ, "ORCHESTR_BENCH_RUN_ID": run_id},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, before, leftovers(run_id)


@pytest.mark.slow
@pytest.mark.docker
def test_quick_run_leaves_nothing_behind(quick_run):
    _, before, after = quick_run
    for what in after:
        assert set(after[what]) <= set(before[what]), f"left {what}: {set(after[what]) - set(before[what])}"


@pytest.mark.slow
@pytest.mark.docker
def test_results_json_holds_every_sample(quick_run):
    out, _, _ = quick_run
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "quick"
    assert {"CPU", "cores", "memory", "kernel", "distribution", "cgroups"} <= set(results["machine"])
    assert {"python", "orchestr", "runc", "crun", "containerd", "docker engine", "docker client",
            "docker-compose"} <= set(results["versions"])
    assert [s["id"] for s in results["scenarios"]] == SCENARIOS
    for scenario in results["scenarios"]:
        assert scenario["status"] in ("ran", "skipped", "failed")
        if scenario["status"] != "ran":
            assert scenario["reason"]
        assert scenario["groups"], scenario["id"]
        ran = set()
        for group in scenario["groups"]:
            assert group["repeat"] >= 1 and group["warmup"] >= 0 and group["unit"] in ("s", "bytes")
            for s in group["series"]:
                assert s["role"] in ("orchestr", "anchor") and (s["role"] == "anchor") == bool(s["versus"])
                if s["status"] == "ran":
                    ran.add(s["tool"])
                    assert s["n"] == len(s["samples"]) == group["repeat"], (group["case"], s["tool"])
                    assert all(isinstance(x, float) and math.isfinite(x) and x > 0 for x in s["samples"])
                    st = s["summary"]
                    assert st["min"] <= st["p10"] <= st["median"] <= st["p90"] <= st["max"]
                    assert st["stdev"] >= 0
                else:
                    assert s["status"] in ("skipped", "failed") and s["reason"], (group["case"], s["tool"])
                    assert len(s["samples"]) < group["repeat"]
        missing = set(ANCHORS_THAT_MUST_RUN[scenario["id"]]) - ran
        assert not missing, f"{scenario['id']}: did not run: {missing}"


@pytest.mark.slow
@pytest.mark.docker
def test_results_md_has_a_table_per_scenario_and_charts_for_what_ran(quick_run):
    out, _, _ = quick_run
    results = json.loads((out / "results.json").read_text())
    text = (out / "RESULTS.md").read_text()
    sections = text.split("\n## ")
    for scenario in results["scenarios"]:
        section = next(s for s in sections if s.startswith(f"{scenario['id']}: "))
        rows = [line for line in section.splitlines() if line.startswith("| ")]
        assert rows[0].startswith("| case | tool | n | median | p10 | p90 |")
        assert "goal" in rows[0] and "met" in rows[0] and "orchestr/anchor" in rows[0]
        tools = [s["tool"] for g in scenario["groups"] for s in g["series"]]
        assert len(rows) == 1 + len(tools)
        for row, tool in zip(rows[1:], tools):
            assert row.split(" | ")[1] == tool
        chart = out / "charts" / f"{scenario['id']}.png"
        if any(s["samples"] for g in scenario["groups"] for s in g["series"]):
            assert chart.read_bytes()[:8] == PNG_SIGNATURE
            assert f"(charts/{scenario['id']}.png)" in section
        else:
            assert not chart.exists()


@pytest.mark.slow
@pytest.mark.docker
def test_a_subset_run_keeps_the_other_scenarios_last_results(quick_run, tmp_path):
    out, _, _ = quick_run
    again = tmp_path / "out"
    shutil.copytree(out, again)
    first = json.loads((out / "results.json").read_text())
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--only", "planner", "--out", str(again)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    second = json.loads((again / "results.json").read_text())
    assert [s["id"] for s in second["scenarios"]] == SCENARIOS
    for old, new in zip(first["scenarios"], second["scenarios"]):
        if new["id"] == "planner":
            assert new["command"].endswith("--only planner --out " + str(again))
            assert new["groups"] != old["groups"]  # measured again: fresh samples
        else:
            assert new["groups"] == old["groups"] and new["command"] == first["command"]
    text = (again / "RESULTS.md").read_text()
    assert all(f"\n## {sid}: " in text for sid in SCENARIOS)
