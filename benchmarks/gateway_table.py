"""The limner-vs-LiteLLM figures from a run's raw rounds: medians per target, medians of paired ratios, and
the Markdown that ``gateway_vs_litellm.md``, ``REPORT.md`` and the README show.

A ratio is taken within one round (the two runs a few seconds apart), then the median over rounds: a
machine whose speed drifts between minutes moves both sides of a pair together.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

LABELS = {
    "direct": "provider directly",
    "limner": "limner",
    "limner-metered": "limner, metered consumer",
    "limner-2w": "limner --workers 2",
    "litellm": "LiteLLM proxy",
}
GOALS = {1: 1.5, 16: 2.0, 64: 2.0}
"""limner's throughput over LiteLLM's that the gateway work aims at, by concurrency."""
ADDED_P50_GOAL_MS = 3.0


def _median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows per concurrency and target (medians over rounds), and the paired ratios per concurrency."""
    cell: dict[tuple[int, str, int], dict[str, Any]] = {
        (run["concurrency"], run["target"], run["round"]): run for run in runs
    }
    grouped: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        grouped[(run["concurrency"], run["target"])].append(run)

    def added(run: dict[str, Any]) -> float | None:
        direct = cell.get((run["concurrency"], "direct", run["round"]))
        return None if direct is None else run["p50_ms"] - direct["p50_ms"]

    rows = []
    for (concurrency, target), group in sorted(grouped.items(), key=lambda item: (item[0][0], _order(item[0][1]))):
        rows.append(
            {
                "concurrency": concurrency,
                "target": target,
                "rounds": len(group),
                "rps": _median([run["rps"] for run in group]),
                "p50_ms": _median([run["p50_ms"] for run in group]),
                "p99_ms": _median([run["p99_ms"] for run in group]),
                "added_p50_ms": None if target == "direct" else _median([added(run) for run in group]),
                "cpu_ms_per_request": _median([run["cpu_ms_per_request"] for run in group]),
                "errors": sum(run["errors"] for run in group),
            }
        )
    ratios = []
    for concurrency in sorted({run["concurrency"] for run in runs}):
        entry: dict[str, Any] = {"concurrency": concurrency, "goal": GOALS.get(concurrency)}
        for target in ("limner", "limner-metered", "limner-2w"):
            paired = []
            for (c, name, round_index), run in cell.items():
                other = cell.get((c, "litellm", round_index))
                if c == concurrency and name == target and other and other["rps"]:
                    paired.append(run["rps"] / other["rps"])
            entry[target] = {"median": _median(list(paired)), "per_round": [round(value, 3) for value in paired]}
        ratios.append(entry)
    return {"rows": rows, "ratios": ratios}


def _order(target: str) -> int:
    return list(LABELS).index(target) if target in LABELS else len(LABELS)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def tables(summary: dict[str, Any]) -> list[str]:
    lines = [
        "| concurrency | target | req/s | p50 ms | p99 ms | added p50 ms | server CPU ms/request | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary["rows"]:
        lines.append(
            f"| {row['concurrency']} | {LABELS.get(row['target'], row['target'])} | {_fmt(row['rps'], 0)} "
            f"| {_fmt(row['p50_ms'])} | {_fmt(row['p99_ms'])} | {_fmt(row['added_p50_ms'])} "
            f"| {_fmt(row['cpu_ms_per_request'])} | {row['errors']} |"
        )
    lines += [
        "",
        "| concurrency | limner / LiteLLM req/s | metered limner / LiteLLM req/s | goal | reached (defaults) "
        "| limner --workers 2 / LiteLLM |",
        "|---:|---:|---:|---:|---|---:|",
    ]
    for entry in summary["ratios"]:
        plain, metered, goal = entry["limner"]["median"], entry["limner-metered"]["median"], entry["goal"]
        two = entry.get("limner-2w", {}).get("median")
        reached = "-" if goal is None or plain is None or metered is None else _yes(min(plain, metered) >= goal)
        lines.append(
            f"| {entry['concurrency']} | {_fmt(plain)}x | {_fmt(metered)}x "
            f"| {'-' if goal is None else f'≥ {goal:g}x'} | {reached} | {_fmt(two)}x |"
        )
    return lines


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def added_p50_line(summary: dict[str, Any]) -> str:
    """Added p50 at concurrency 1 for each gateway, against the goal."""
    at_one = {row["target"]: row["added_p50_ms"] for row in summary["rows"] if row["concurrency"] == 1}
    if not at_one:
        return ""
    ours = [value for key, value in at_one.items() if key in ("limner", "limner-metered") and value is not None]
    limner = max(ours, default=None)
    reached = "-" if limner is None else _yes(limner <= ADDED_P50_GOAL_MS)
    return (
        f"Added p50 at concurrency 1 (gateway p50 minus the provider's own, paired per round): limner "
        f"{_fmt(at_one.get('limner'))} ms, metered {_fmt(at_one.get('limner-metered'))} ms, LiteLLM "
        f"{_fmt(at_one.get('litellm'))} ms (limner --workers 2: {_fmt(at_one.get('limner-2w'))} ms); "
        f"goal ≤ {ADDED_P50_GOAL_MS:g} ms for limner at its defaults: {reached}."
    )


def markdown(report: dict[str, Any]) -> str:
    summary = summarise(report["runs"])
    machine, conditions = report["machine"], report["conditions"]
    audit = conditions.get("connections_audit", {})
    if "skipped" in audit:
        audited = f"not audited ({audit['skipped']})"
    else:
        outside = sorted({address for entry in audit.values() for address in entry["not_loopback"]})
        audited = "none outside loopback" if not outside else f"OUTSIDE LOOPBACK: {', '.join(outside)}"
    lines = [
        "# limner vs LiteLLM as gateways",
        "",
        f"Written by `{report['command']}` on {report['started']} ({report['seconds']:.0f} s). Both gateways at their "
        "defaults (one process each), in front of the same instant fake OpenAI Images provider (a bare ASGI app "
        "answering a 256x256 PNG as `b64_json`); limner with accounting on (a token per request, usage rows, "
        "credits reserved and committed for the metered consumer). Load from wrk, one thread, keep-alive; "
        f"{conditions['rounds']} interleaved rounds of {conditions['seconds_per_run']:g} s per target and "
        "concurrency. Figures are medians over rounds, ratios medians of per-round paired ratios; CPU is the "
        "server process's utime + stime from `/proc` over the middle of each run, per request served (all "
        "processes of `limner --workers 2`, a non-default shown beside the defaults: what a second process "
        "buys on the same cores).",
        "",
        "| | |",
        "|---|---|",
        f"| machine | {machine['cpus']} CPUs ({machine['usable_cpus']} usable), {machine['cpu_model']} |",
        f"| system | {machine['platform']}, Python {machine['python']} |",
        f"| limner | commit {machine['limner_commit']} |",
        f"| LiteLLM | litellm[proxy] {machine['litellm']} (own virtual environment, no master key, no database) |",
        f"| load generator | {machine['wrk']} |",
        f"| load average | {_load(machine.get('load_average_before'))} before, "
        f"{_load(machine.get('load_average_after'))} after |",
        f"| outbound connections (strace of every connect()) | {audited} |",
        f"| limner's ledger after the run (`limner usage`; failed = in flight when a wrk run stopped, recorded "
        f"as 499 `client_closed`) | {_usage(conditions.get('limner_usage_after'))} |",
        "",
        *tables(summary),
        "",
        added_p50_line(summary),
    ]
    return "\n".join(lines) + "\n"


def _usage(recorded: dict[str, Any] | None) -> str:
    if not recorded:
        return "?"
    return "; ".join(
        f"{consumer}: {entry['requests']} requests ({entry['failed']} failed), {entry['credits']} credits"
        if isinstance(entry, dict)
        else f"{consumer}: {entry}"
        for consumer, entry in sorted(recorded.items())
    )


def _load(values: list[float] | None) -> str:
    return "/".join(f"{value:.2f}" for value in values) if values else "?"
