"""Benchmarks orchestr side by side with the tools people would use instead; writes RESULTS.md, results.json, charts.

    .venv/bin/python bench/run.py [--quick] [--only SCENARIO...] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import signal
import sys
import time
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import machine  # noqa: E402
import report  # noqa: E402
from context import Context, new_run_id, workdir  # noqa: E402
from harness import Skip, describe  # noqa: E402
from scenarios import SCENARIOS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions and small sizes: about a minute")
    parser.add_argument("--only", nargs="+", choices=list(SCENARIOS), metavar="SCENARIO",
                        help=f"run only these, keeping the others' last results ({', '.join(SCENARIOS)})")
    parser.add_argument("--out", type=Path, default=BENCH, help="where RESULTS.md, results.json and charts/ go")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every clean-up still runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    results = {
        "schema": 1,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "quick" if args.quick else "full",
        "command": " ".join(["bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine.facts(),
        "versions": {},
        "scenarios": [],
    }
    with contextlib.ExitStack() as stack:
        run_id = new_run_id()
        ctx = Context(quick=args.quick, run_id=run_id, work=stack.enter_context(workdir(run_id)), stack=stack)
        results["versions"] = machine.versions(ctx)
        for sid in args.only or list(SCENARIOS):
            results["scenarios"].append(run_scenario(ctx, sid))
            results["scenarios"][-1].update(date=results["date"], command=results["command"])
    if args.only:
        results["scenarios"] = kept(args.out / "results.json", results)
    results["machine"]["load average at end"] = machine.load_average()
    report.write(results, args.out)
    print(f"wrote {args.out / 'RESULTS.md'}, {args.out / 'results.json'} and {args.out / 'charts'}/")
    return 0


def kept(path: Path, results: dict) -> list[dict]:
    """A subset's scenarios beside the other scenarios' last results of the same mode, in the usual order."""
    import json

    try:
        last = json.loads(path.read_text())
    except (OSError, ValueError):
        return results["scenarios"]
    if last.get("mode") != results["mode"]:
        return results["scenarios"]
    by_id = {s["id"]: s for s in last["scenarios"]}
    by_id.update((s["id"], s) for s in results["scenarios"])
    return [by_id[sid] for sid in SCENARIOS if sid in by_id]


def run_scenario(ctx: Context, sid: str) -> dict:
    module = SCENARIOS[sid]
    print(f"== {sid}: {module.TITLE}", flush=True)
    record = {
        "id": sid, "title": module.TITLE, "description": module.DESCRIPTION, "notes": list(module.NOTES),
        "status": "ran", "reason": None, "groups": [], "elapsed_s": 0.0,
    }
    ctx.notes = record["notes"]
    t0 = time.perf_counter()
    try:
        record["groups"] = module.run(ctx)
    except Skip as e:
        record["status"], record["reason"] = "skipped", str(e)
    except Exception as e:  # noqa: BLE001 - one broken scenario must not lose the others' results
        traceback.print_exc()
        record["status"], record["reason"] = "failed", describe(e)
    record["elapsed_s"] = time.perf_counter() - t0
    series = [s for g in record["groups"] for s in g["series"]]
    if record["status"] == "ran" and not any(s["samples"] for s in series):
        reasons = sorted({s["reason"] for s in series if s["reason"]})
        record["status"] = "skipped" if all(s["status"] == "skipped" for s in series) else "failed"
        record["reason"] = "; ".join(reasons) or "nothing was measured"
    for group in record["groups"]:
        unit, div = report.scale(group)
        for s in group["series"]:
            if s["summary"]:
                ratio = "  ".join(f"{r:.2f}x {v}" for v, r in report.ratios(group, s) if r is not None)
                line = f"median {report.fmt(s['summary']['median'], div)} {unit}  n={s['n']}  {ratio}"
                if s["status"] != "ran":
                    line += f"  ({s['status']} after {s['n']}: {s['reason']})"
            else:
                line = f"{s['status']}: {s['reason']}"
            print(f"   {group['case']:<28} {s['tool']:<40} {line}", flush=True)
    if record["status"] != "ran":
        print(f"   {record['status']}: {record['reason']}", flush=True)
    print(f"   ({record['elapsed_s']:.0f} s)", flush=True)
    return record


if __name__ == "__main__":
    sys.exit(main())
