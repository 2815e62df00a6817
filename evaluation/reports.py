"""The tables and figures of evaluation runs: Markdown and CSV text, PNG plots, the one headline number."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from indexing.lsh.hashing import FAMILIES

if TYPE_CHECKING:
    from evaluation.models import EvaluationRun

# The columns of the paper's section-5 tables, in its order, then ours.
PAPER_COLUMNS = (
    "mAP",
    "IE",
    "avg bucket purity",
    "std bucket purity",
    "number of buckets",
    "number of items",
    "avg items per bucket",
    "std items per bucket",
)
SWEEP_COLUMNS = ("family", "L", "K", "probes", *PAPER_COLUMNS, "IE (paper)", "recall@10", "p50 latency ms")


def format_value(value: Any) -> str:
    if value is None:
        return "inf"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.1f}"
        if abs(value) >= 10:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_value(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def sweep_markdown(rows: Sequence[Mapping[str, Any]], *, scan: Mapping[str, Any] | None = None) -> str:
    text = markdown_table(rows, SWEEP_COLUMNS)
    if scan is not None:
        text += (
            f"\n\nsequential scan: mAP {scan['mAP']:.3f}, p@10 {scan['p@10']:.3f}, "
            f"p50 latency {scan['p50 latency ms']:.2f} ms\n"
        )
    return text


def sweep_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(SWEEP_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _figure() -> Any:
    from matplotlib.figure import Figure  # the object API: no pyplot global state, safe in threads and workers

    return Figure(figsize=(7, 4.5), dpi=110)


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def sweep_plot_png(rows: Sequence[Mapping[str, Any]], *, scan_map: float) -> bytes:
    """mAP against IE (log scale), one series per (family, probes), the scan's mAP as a horizontal line."""
    figure = _figure()
    axes = figure.add_subplot()
    series: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for row in rows:
        series.setdefault((row["family"], row["probes"]), []).append(row)
    for (name, probe), points in series.items():
        finite = [p for p in points if p["IE"] is not None]
        label = f"{name} LSH" + (f", {probe} probes" if probe else "")
        axes.scatter([p["IE"] for p in finite], [p["mAP"] for p in finite], marker=FAMILIES[name].marker, label=label)
        for point in finite:
            axes.annotate(
                f"L{point['L']}K{point['K']}", (point["IE"], point["mAP"]), fontsize=7, xytext=(3, 3),
                textcoords="offset points",
            )  # fmt: skip
    axes.axhline(scan_map, color="grey", linestyle="--", label=f"sequential scan (mAP {scan_map:.3f})")
    axes.set_xscale("log")
    axes.set_xlabel("IE (scan distance computations / distinct LSH candidates)")
    axes.set_ylabel("mAP")
    axes.set_title("LSH parameter sweep: accuracy against efficiency")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    return _png(figure)


def class_map_plot_png(per_class: Sequence[Mapping[str, Any]]) -> bytes:
    figure = _figure()
    figure.set_size_inches(max(7.0, 0.18 * len(per_class)), 4.5)
    axes = figure.add_subplot()
    rows = sorted(per_class, key=lambda row: row["mAP"], reverse=True)
    axes.bar(range(len(rows)), [row["mAP"] for row in rows])
    axes.set_xticks(range(len(rows)), [row["class"] for row in rows], rotation=90, fontsize=6)
    axes.set_ylabel("class mAP")
    axes.set_title("mAP by class (Algorithm 1)")
    return _png(figure)


def recall_scatter_png(per_class: Sequence[Mapping[str, Any]], results: Mapping[str, Any]) -> bytes:
    figure = _figure()
    axes = figure.add_subplot()
    points = [row for row in per_class if row.get("recall") is not None]
    axes.scatter([row["recall"] for row in points], [row["mAP"] for row in points])
    for row in points:
        axes.annotate(row["class"], (row["recall"], row["mAP"]), fontsize=6)
    correlation = results.get("pearson recall vs mAP")
    axes.set_xlabel("classifier recall")
    axes.set_ylabel("class mAP")
    axes.set_title("Recall and mAP by class" + (f" (Pearson r = {correlation:.2f})" if correlation is not None else ""))
    return _png(figure)


def run_headline(run: EvaluationRun) -> float | None:
    """The one mAP that sums a run up: the method's, or the scan's for a sweep."""
    value = (run.results or {}).get("mAP")
    return float(value) if isinstance(value, int | float) else None
