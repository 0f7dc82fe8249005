"""``report.png``: the four pictures a reader looks at first, drawn from ``report.json``.

Throughput against concurrency (batching on, off, and the naive server), latency percentiles at each
load, server memory during the overload run (is it flat?), and each server's RSS idle, loaded, peak.
matplotlib is in the ``dev`` extra; without it the report is written with no plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def draw(sections: dict[str, Any], path: Path) -> bool:
    """Write the plot; False when matplotlib is missing (the report then says so instead)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False

    def data(name: str) -> dict[str, Any] | None:
        section = sections.get(name)
        return None if section is None or "error" in section["data"] else section["data"]

    figure, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    _throughput(axes[0][0], data("batching"), data("naive"))
    _latency(axes[0][1], data("latency"))
    _overload_memory(axes[1][0], data("latency"))
    _memory(axes[1][1], data("memory"))
    figure.suptitle("limner benchmarks (built-in model, 32x32)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def _missing(ax: Any, title: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _throughput(ax: Any, batching: dict[str, Any] | None, naive: dict[str, Any] | None) -> None:
    title = "Throughput (closed loop)"
    if batching is None and naive is None:
        return _missing(ax, title)
    if batching is not None:
        levels = [row["concurrency"] for row in batching["rows"]]
        for key, style in (("on", "o-"), ("off", "s--")):
            rates = [row[key]["images_per_second"] for row in batching["rows"]]
            ax.plot(levels, rates, style, label=f"limner, batching {key}")
        ax.set_xticks(levels)
    if naive is not None:
        ax.plot(
            [naive["concurrency"]],
            [naive["naive"]["images_per_second"]],
            "X",
            markersize=11,
            color="crimson",
            label="naive one-lock server",
        )
    ax.set(title=title, xlabel="concurrent clients", ylabel="images / s")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    return None


def _latency(ax: Any, latency: dict[str, Any] | None) -> None:
    title = "Latency under Poisson load"
    if latency is None:
        return _missing(ax, title)
    loads = [*latency["loads"], latency["overload"]]
    labels = [f"{load['fraction']:.0%}" for load in loads]
    width = 0.26
    for offset, key in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        xs = [index + (offset - 1) * width for index in range(len(loads))]
        ax.bar(xs, [(load[key] or 0) / 1000 for load in loads], width, label=key.removesuffix("_ms"))
    ax.set_xticks(range(len(loads)), [f"{label} of capacity" for label in labels])
    ax.set(title=title, ylabel="seconds (from scheduled arrival)")
    ax.set_ylim(top=max((load["p99_ms"] or 0) for load in loads) / 1000 * 1.25 or 1)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(ncols=3, loc="upper left")
    return None


def _overload_memory(ax: Any, latency: dict[str, Any] | None) -> None:
    title = "Server RSS past capacity (150%, small queue)"
    if latency is None or not latency["overload"].get("rss_trace_mb"):
        return _missing(ax, title)
    trace = latency["overload"]["rss_trace_mb"]
    ax.plot([t for t, _ in trace], [mb for _, mb in trace], color="tab:purple")
    ax.set(title=title, xlabel="seconds", ylabel="RSS (MB)")
    low = min(mb for _, mb in trace)
    ax.set_ylim(low * 0.9, max(mb for _, mb in trace) * 1.05)
    ax.grid(alpha=0.3)
    return None


def _memory(ax: Any, memory: dict[str, Any] | None) -> None:
    title = "Server RSS"
    if memory is None:
        return _missing(ax, title)
    rows = memory["rows"]
    width = 0.26
    for offset, (key, label) in enumerate((("idle_mb", "idle"), ("loaded_mb", "model loaded"), ("peak_mb", "peak"))):
        xs = [index + (offset - 1) * width for index in range(len(rows))]
        ax.bar(xs, [row[key] for row in rows], width, label=label)
    ax.set_xticks(range(len(rows)), [row["server"].removeprefix("limner-") for row in rows], rotation=10)
    ax.set(title=title, ylabel="MB")
    ax.set_ylim(top=max(row["peak_mb"] for row in rows) * 1.25)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(ncols=3, loc="upper left")
    return None
