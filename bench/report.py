"""The Markdown table and the PNG plots, made from the JSON results in ``bench/results/``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.common import RESULTS

ORDER = (
    "traffic",
    "floor",
    "model",
    "submit",
    "delivery",
    "redis_cost",
    "scale",
    "batches",
    "ha",
    "cluster",
    "capacity",
)


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def load_results(folder: Path = RESULTS) -> list[dict[str, Any]]:
    """Every result file, in the suite's order."""
    found = {path.stem: json.loads(path.read_text()) for path in folder.glob("*.json")}
    return [found[name] for name in ORDER if name in found] + [
        found[name] for name in sorted(found) if name not in ORDER
    ]


def markdown(results: list[dict[str, Any]]) -> str:
    """One table of every figure: median (min-max) over the repeats, the target, and whether it is met."""
    if not results:
        return "No results yet: run `make bench`.\n"
    first = results[0]
    box = first["machine"]
    quick = any(r["quick"] for r in results)
    lines = [
        "# Latest benchmark results",
        "",
        f"Machine: {box['nproc']} CPUs ({box['cpu']}), {box['ram_gb']} GB RAM, Python {box['python']}, "
        f"Redis {box['redis']}; load average at start {box['loadavg_at_start']}.",
        f"Run: {'QUICK mode (SLUICE_BENCH_QUICK=1)' if quick else 'full'}, "
        f"finished {max(r['finished_at'] for r in results)}; each figure is the median of its n "
        "runs, with min and max.",
        "Each benchmark's run: "
        + "; ".join(
            f"{r['name']} {r['finished_at']} (load {r['machine']['loadavg_at_start'][0]})" for r in results
        )
        + ".",
        "",
        "| benchmark | metric | median | min | max | n | unit | target | met |",
        "|---|---|---:|---:|---:|---:|---|---|---|",
    ]
    for result in results:
        for metric in result["metrics"]:
            met = {True: "yes", False: "**no**", None: ""}[metric["met"]]
            figures = " | ".join(_fmt(metric[k]) for k in ("median", "min", "max"))
            lines.append(
                f"| {result['name']} | {metric['name']} | {figures} | {len(metric['runs'])} | "
                f"{metric['unit']} | {metric['target']} | {met} |"
            )
    return "\n".join(lines) + "\n"


def plots(results: list[dict[str, Any]], folder: Path = RESULTS) -> list[Path]:
    """Latency distributions (delivery, fan-out) and the scale-out curve, as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[Path] = []
    by_name = {r["name"]: r for r in results}
    delivery = by_name.get("delivery")
    if delivery and delivery.get("samples_ms"):
        fig, ax = plt.subplots(figsize=(7, 4))
        for label, values in delivery["samples_ms"].items():
            if values:
                ys = [i / (len(values) - 1 or 1) for i in range(len(values))]
                ax.plot(values, ys, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("append → SSE bytes at the observer (ms, log)")
        ax.set_ylabel("fraction of events")
        ax.set_title("Event delivery: 1 observer at 1,000 ev/s; 1,000 observers")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        path = folder / "delivery.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    scale = by_name.get("scale")
    if scale:
        rates = [m for m in scale["metrics"] if m["unit"] == "gen/s"]
        procs = [int(m["name"].split(", ")[1].split()[0]) for m in rates]
        fig, ax = plt.subplots(figsize=(6, 4))
        med = [m["median"] for m in rates]
        err = [[m["median"] - m["min"] for m in rates], [m["max"] - m["median"] for m in rates]]
        ax.errorbar(procs, med, yerr=err, marker="o", capsize=4, label="measured (median, min-max)")
        ax.plot(procs, [med[0] * p for p in procs], linestyle="--", label="linear")
        ax.set_xticks(procs)
        ax.set_xlabel("worker processes")
        ax.set_ylabel("generations / s")
        ax.set_title("Scale-out, I/O-bound scripted model")
        ax.grid(True, alpha=0.3)
        ax.legend()
        path = folder / "scale.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    return made


def write_report(folder: Path = RESULTS) -> Path:
    """``bench/results/README.md`` (table and plots) from the result files present."""
    results = load_results(folder)
    images = plots(results, folder) if results else []
    text = markdown(results)
    for image in images:
        text += f"\n![{image.stem}]({image.name})\n"
    path = folder / "README.md"
    path.write_text(text)
    return path
