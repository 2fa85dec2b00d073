"""PNG charts of a ``qac bench`` result: latency against concurrency, and costs against data size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_STYLES = {"model": "-", "mpc": "--"}
_COLORS = {"p50_ms": "tab:blue", "p95_ms": "tab:orange", "p99_ms": "tab:red"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_chart(loads: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> Path:
    """Round-trip p50/p95/p99 against concurrent sessions, one line style per system."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for system, rows in loads.items():
        rows = [r for r in rows if r.get("p50_ms") is not None]
        users = [r["users"] for r in rows]
        for key, color in _COLORS.items():
            ax.plot(users, [r[key] for r in rows], _STYLES.get(system, ":"), color=color, marker="o",
                    label=f"{system} {key[:3]}")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    levels = sorted({r["users"] for rows in loads.values() for r in rows})
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(levels, [str(n) for n in levels])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("concurrent human-paced sessions (a keystroke every 150-250 ms each)")
    ax.set_ylabel("round trip, ms")
    ax.set_title("Keystroke latency against concurrency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scale_chart(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Build time, peak memory, model size and latency against the number of labels."""
    plt = _pyplot()
    labels = [r["labels"] for r in rows]
    panels = (
        ("build time, s", [("build_s", "build")]),
        ("peak build memory, MB", [("peak_mb", "peak RSS")]),
        ("model size on disk, MB", [("size_mb", "size")]),
        ("single-request latency, ms", [("p50_ms", "p50"), ("p99_ms", "p99")]),
    )
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.5))
    for ax, (title, series) in zip(axes.flat, panels):
        for key, name in series:
            ax.plot(labels, [r.get(key) for r in rows], marker="o", label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("labels (distinct queries)")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    fig.suptitle("Cost against data size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
