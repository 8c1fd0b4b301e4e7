"""Turns the results into RESULTS.md (tables, goals, ratios) and one PNG chart per scenario."""

from __future__ import annotations

from pathlib import Path

RERUN = ".venv/bin/python bench/run.py"


def medians(group: dict) -> dict[str, float]:
    return {s["tool"]: s["summary"]["median"] for s in group["series"] if s["summary"]}


def ratios(group: dict, series: dict) -> list[tuple[str, float | None]]:
    """(orchestr contender, its median / this anchor's median) for each contender the row is compared with."""
    m = medians(group)
    mine = m.get(series["tool"])
    return [(v, m[v] / mine if v in m and mine else None) for v in series["versus"]]


def goal_met(group: dict, series: dict) -> bool | None:
    goal = series["goal"]
    if not goal or not series["summary"]:
        return None
    if goal["max_value"] is not None:
        return series["summary"]["median"] <= goal["max_value"]
    first = ratios(group, series)[:1]
    if goal["max_ratio"] is not None and first and first[0][1] is not None:
        return first[0][1] <= goal["max_ratio"]
    return None


def scale(group: dict) -> tuple[str, float]:
    """The display unit and divisor that suit the group's largest median."""
    top = max(medians(group).values(), default=0.0)
    if group["unit"] == "bytes":
        return ("MiB", 2**20) if top >= 2**20 else ("KiB", 2**10)
    if group["unit"] in ("%", "requests"):
        return group["unit"], 1.0
    return ("s", 1.0) if top >= 10 else ("ms", 1e-3)


def fmt(value: float, divisor: float) -> str:
    v = value / divisor
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def verdict(met: bool | None, series: dict) -> str:
    if not series["goal"]:
        return ""
    return {True: "met", False: "**not met**", None: "n/a"}[met]


def table(scenario: dict) -> list[str]:
    lines = [
        "| case | tool | n | median | p10 | p90 | stdev | min | max | orchestr/anchor | goal | met |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for group in scenario["groups"]:
        unit, div = scale(group)
        for s in group["series"]:
            goal = s["goal"]["text"] if s["goal"] else ""
            if not s["summary"]:
                why = cell(f"{s['status']}: {s['reason']}")
                lines.append(f"| {group['case']} | {s['tool']} | 0 | {why} |  |  |  |  |  |  | {goal} | "
                             f"{verdict(None, s)} |")
                continue
            st = s["summary"]
            ratio = ", ".join(f"{r:.2f}x ({v})" if r is not None else f"n/a ({v})" for v, r in ratios(group, s))
            cells = [fmt(st[k], div) + f" {unit}" for k in ("median", "p10", "p90", "stdev", "min", "max")]
            n = s["n"] if s["status"] == "ran" else f"{s['n']} ({s['status']}, see below)"
            lines.append(f"| {group['case']} | {s['tool']} | {n} | {' | '.join(cells)} | {ratio} | {goal} | "
                         f"{verdict(goal_met(group, s), s)} |")
    if not scenario["groups"]:
        why = cell(f"{scenario['status']}: {scenario['reason']}")
        lines.append(f"| — | — | 0 | {why} |  |  |  |  |  |  |  |  |")
    return lines


def markdown(results: dict, charts: dict[str, str]) -> str:
    m, v = results["machine"], results["versions"]
    out = [
        "# orchestr benchmarks",
        "",
        f"Last run {results['date']} ({results['mode']} mode): `{results['command']}`; a section another run measured"
        f" names that run where it was recorded. Rerun with `{RERUN}`",
        "(`--quick` for a one-minute smoke run, `--only SCENARIO...` for a subset, the others keeping their last results,",
        "`--out DIR` elsewhere).",
        "Raw samples: [results.json](results.json).",
        "",
        "Every scenario runs orchestr and the tools people would use instead on the same machine in the same run,",
        "alternating (A B A B ...) after a warm-up. Times are wall-clock (`time.perf_counter`) around each call.",
        "**orchestr/anchor** is orchestr's median divided by the anchor's: below 1 means orchestr is faster",
        "(or smaller); above 1, slower. p10/p90 are interpolated percentiles of the samples.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {val} |" for k, val in m.items()),
        "",
        "## Versions",
        "",
        "| tool | version |",
        "|---|---|",
        *(f"| {k} | {val} |" for k, val in v.items()),
        "",
        "## Summary",
        "",
        "| scenario | status | goals | elapsed |",
        "|---|---|---|---:|",
        *(f"| [{s['title']}](#{anchor(s)}) | {cell(s['status'] + (': ' + s['reason'] if s['reason'] else ''))} | "
          f"{goals(s)} | {s['elapsed_s']:.0f} s |" for s in results["scenarios"]),
        "",
    ]
    for s in results["scenarios"]:
        out += [f"## {s['id']}: {s['title']}", ""]
        if s.get("date") and s["date"] != results["date"]:
            out += [f"Measured {s['date']} by `{s['command']}`.", ""]
        out += [s["description"], ""]
        if s["status"] != "ran":
            out += [f"**{s['status'].capitalize()}:** {s['reason']}", ""]
        out += table(s)
        out.append("")
        skipped = [(g["case"], x) for g in s["groups"] for x in g["series"] if x["status"] != "ran"]
        seen = set()
        for case, x in skipped:
            if x["tool"] not in seen:
                seen.add(x["tool"])
                out.append(f"- {x['tool']}: {x['status']}: {x['reason']}")
        out += [f"- {note}" for note in s["notes"]]
        if s["id"] in charts:
            out += ["", f"![{s['title']}]({charts[s['id']]})"]
        out.append("")
    return "\n".join(out)


def goals(scenario: dict) -> str:
    """Each goal of the scenario with its verdict, e.g. "10k services under 50 ms: met"."""
    found = [f"{x['goal']['text']}: {verdict(goal_met(g, x), x)}"
             for g in scenario["groups"] for x in g["series"] if x["goal"]]
    return "; ".join(found)


def anchor(scenario: dict) -> str:
    """GitHub's heading anchor for the scenario's section."""
    text = f"{scenario['id']}: {scenario['title']}".lower()
    return "".join(c for c in text.replace(" ", "-") if c.isalnum() or c in "-_")


def chart(scenario: dict, path: Path) -> bool:
    """A box plot of every sample, one panel per case; False when nothing ran."""
    groups = [g for g in scenario["groups"] if medians(g)]
    if not groups:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height = sum(0.9 + 0.42 * len(g["series"]) for g in groups)
    fig, axes = plt.subplots(len(groups), 1, figsize=(9, max(2.5, height)), squeeze=False)
    for ax, group in zip(axes[:, 0], groups):
        unit, div = scale(group)
        names, data = [], []
        for s in reversed(group["series"]):
            names.append(s["tool"] if s["samples"] else f"{s['tool']} ({s['status']})")
            data.append([x / div for x in s["samples"]] or [float("nan")])
        try:
            ax.boxplot(data, orientation="horizontal", widths=0.6)
        except TypeError:  # matplotlib before 3.10
            ax.boxplot(data, vert=False, widths=0.6)
        ax.set_yticks(range(1, len(names) + 1), names, fontsize=8)
        ax.set_title(group["case"], fontsize=10, loc="left")
        spread = [v for v in medians(group).values() if v > 0]
        if spread and max(spread) / min(spread) > 20:
            ax.set_xscale("log")  # runc next to docker: a linear axis would hide the fast tools
        else:
            ax.set_xlim(left=0)
        ax.set_xlabel(unit + (" (log scale)" if ax.get_xscale() == "log" else ""), fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        for s in group["series"]:
            goal = s["goal"]
            if goal and goal["max_value"] is not None and s["samples"]:
                ax.axvline(goal["max_value"] / div, color="tab:red", linestyle="--", linewidth=1, label=goal["text"])
                ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1, 1), frameon=False)
    fig.suptitle(scenario["title"], fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write(results: dict, out: Path) -> None:
    """results.json holds everything, raw samples included:
    {schema, date, mode, command, machine, versions, scenarios: [{id, title, description, notes, status, reason, date, command,
    elapsed_s, groups: [{case, unit, repeat, warmup, series: [{tool, role, versus, status, reason, goal, n,
    samples, summary}]}]}]}; times in seconds, memory in bytes.
    """
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    charts = {}
    for s in results["scenarios"]:
        if chart(s, out / "charts" / f"{s['id']}.png"):
            charts[s["id"]] = f"charts/{s['id']}.png"
    (out / "RESULTS.md").write_text(markdown(results, charts))
