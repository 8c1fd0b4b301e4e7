"""What this checkout's command line costs against another's: `--help`, a no-op apply of an orchestr spec and of
the same services as a compose file, on the native runtime (as root).

    .venv/bin/python bench/cli_overhead.py --baseline /path/to/other/checkout [--repeat 30]

Both run with this venv's interpreter, each with its own checkout (and its plugins/) first on sys.path,
alternating A B A B; prints medians and this/baseline ratios, of wall time and of CPU time (user + system, which
other load on the machine disturbs less than wall time).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
SPEC = """\
apiVersion: orchestr/v1
kind: Service
metadata: {{name: s{i}, namespace: {ns}}}
spec: {{image: {image}, command: [sleep, "3600"], network: none, stopGracePeriod: 1s}}
"""
COMPOSE = """\
services:
{services}
"""


def orchestr(checkout: Path, *args: str, env: dict[str, str]) -> list[str]:
    code = ("import sys; sys.path[:0] = [{0!r}, {1!r}]; sys.argv = ['orchestr', *{2!r}]; "
            "from orchestr.cli import main; main()").format(str(checkout), str(checkout / "plugins"), list(args))
    return [sys.executable, "-c", code]


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[-1][:80]}... failed: {proc.stderr.decode()}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def medians(samples: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(s[0] for s in samples) * 1e3, statistics.median(s[1] for s in samples) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", type=Path, required=True)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--image", default="orchestr-bench/busybox:latest")
    args = p.parse_args()
    sys.path.insert(0, str(HERE))
    from orchestr.testing import images

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**os.environ, "ORCHESTR_STATE_DIR": str(work / "state"), "ORCHESTR_RUNTIME": "native"}
        images.busybox_image(work / "busybox.tar", [args.image])
        subprocess.run(orchestr(HERE, "images", "import", str(work / "busybox.tar"), env=env), env=env, check=True,
                       stdout=subprocess.DEVNULL)
        spec = work / "spec.yaml"
        spec.write_text("---\n".join(SPEC.format(i=i, ns="bench-spec", image=args.image) for i in range(3)))
        (work / "bench-compose").mkdir()
        compose = work / "bench-compose" / "compose.yaml"
        compose.write_text(COMPOSE.format(services="\n".join(
            f"  s{i}: {{image: '{args.image}', command: sleep 3600, network_mode: none, stop_grace_period: 1s}}"
            for i in range(3))))
        cases = {"--help": ["--help"], "no-op apply (spec)": ["apply", "-f", str(spec)],
                 "no-op apply (compose)": ["apply", "-f", str(compose)]}
        subprocess.run(orchestr(HERE, "apply", "-f", str(spec), env=env), env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(orchestr(HERE, "apply", "-f", str(compose), env=env), env=env, check=True,
                       stdout=subprocess.DEVNULL)
        try:
            print(f"{'case':<24} {'this (ms)':>10} {'baseline (ms)':>14} {'ratio':>6}   "
                  f"{'CPU: this':>10} {'baseline':>9} {'ratio':>6}")
            for name, argv in cases.items():
                if "compose" in name and not (args.baseline / "orchestr" / "spec" / "compose.py").exists():
                    this = [timed(orchestr(HERE, *argv, env=env), env) for _ in range(args.repeat)]
                    wall, cpu = medians(this)
                    print(f"{name:<24} {wall:>10.1f} {'(none)':>14} {'':>6}   {cpu:>10.1f} {'(none)':>9}")
                    continue
                this, base = [], []
                for i in range(args.repeat):  # A B, then B A: neither always goes first
                    pair = [(this, HERE), (base, args.baseline)]
                    for samples, checkout in pair if i % 2 == 0 else reversed(pair):
                        samples.append(timed(orchestr(checkout, *argv, env=env), env))
                (a, a_cpu), (b, b_cpu) = medians(this), medians(base)
                print(f"{name:<24} {a:>10.1f} {b:>14.1f} {a / b:>6.2f}   {a_cpu:>10.1f} {b_cpu:>9.1f} "
                      f"{a_cpu / b_cpu:>6.2f}")
        finally:
            for f in (spec, compose):
                subprocess.run(orchestr(HERE, "delete", "-f", str(f), env=env), env=env, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
