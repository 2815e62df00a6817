"""Evaluation runs: each protocol run over stored features and kept as an EvaluationRun with its files.

``evaluation_run`` (scan or a stored index), ``lsh_sweep`` (the section-5 tables) and ``class_analysis``
(Algorithm 1) load their inputs (``evaluation.data``), compute with the pure protocol
(``evaluation.protocol_maths``) and save the row and its tables and figures (``evaluation.reports``).
``evaluation_execute`` is what ``evaluation.tasks`` runs for a queued run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from evaluation import metrics
from evaluation.data import evaluation_data_load, evaluation_inputs_resolve
from evaluation.models import EvaluationRun
from evaluation.protocol_maths import (
    LATENCY_QUERIES,
    EvaluationError,
    Progress,
    gallery_summary,
    lsh_latency_ms,
    lsh_outcome,
    outcome_summary,
    scan_latency_ms,
    scan_outcome,
    scan_rank,
    stats_columns,
    sweep_check,
    sweep_rows,
)
from evaluation.reports import (
    SWEEP_COLUMNS,
    class_map_plot_png,
    recall_scatter_png,
    sweep_csv,
    sweep_markdown,
    sweep_plot_png,
)
from indexing.lsh.stats import bucket_stats
from indexing.models import Collection, Extractor, Image, LSHIndex
from indexing.selectors import index_family
from indexing.stores import OrmBucketStore

RECALL_UNAVAILABLE = "classifier recall unavailable: no fine-tuned model"
RUN_KINDS = (EvaluationRun.Kind.EVALUATE, EvaluationRun.Kind.SWEEP, EvaluationRun.Kind.CLASS_ANALYSIS)


def _names(collections: Sequence[Collection]) -> list[str]:
    return [c.name for c in collections]


def _save_file(run: EvaluationRun, name: str, content: bytes) -> str:
    return default_storage.save(f"evaluations/{run.pk}/{name}", ContentFile(content))


@transaction.atomic
def _run_create(**fields: Any) -> EvaluationRun:
    return EvaluationRun.objects.create(**fields)


def evaluation_run(
    *,
    extractor: Extractor,
    collections: Sequence[Collection],
    distractors: Sequence[Collection] = (),
    index: LSHIndex | None = None,
    scan: bool = True,
    queries: str = "all",
    probes: int | None = None,
    latency_queries: int = LATENCY_QUERIES,
    query_collections: Sequence[Collection] = (),
) -> EvaluationRun:
    """Evaluate the sequential scan (``index=None``) or a stored LSH index over the paper's protocol.

    With an index, the scan is evaluated too (it is the recall@10 reference) and reported under ``"scan"``;
    ``probes=None`` probes as the index does by default (its tuned probes). ``query_collections``: the queries come
    from those collections and the gallery is the whole of ``collections`` (see :func:`evaluation_data_load`).
    """
    if probes is None:
        probes = index.probes if index is not None else 0
    if index is None and not scan:
        raise EvaluationError("give an index or scan=True")
    if probes < 0:
        raise EvaluationError(f"probes must be >= 0, got {probes}")
    if index is not None and index.extractor_id != extractor.pk:
        raise EvaluationError(f"index {index.pk} was built on another extractor than {extractor.name!r}")
    data = evaluation_data_load(
        extractor=extractor,
        collections=collections,
        distractors=distractors,
        queries=queries,
        query_collections=query_collections,
    )
    ranking = scan_rank(data)
    scan_results = outcome_summary(data, ranking, scan_outcome(data, ranking))
    scan_results["p50 latency ms"] = scan_latency_ms(data, count=latency_queries)
    parameters: dict[str, Any] = {
        "collections": _names(collections),
        "distractors": _names(distractors),
        "query_collections": _names(query_collections),
        "queries": queries,
        "method": "scan" if index is None else "lsh",
        "probes": probes,
    }
    if index is None:
        results = {**scan_results, **gallery_summary(data)}
    else:
        family = index_family(index)
        gallery_keys = family.keys(data.gallery_vectors)
        outcome = lsh_outcome(data, ranking, family, gallery_keys, probes=probes)
        results = outcome_summary(data, ranking, outcome)
        store = OrmBucketStore(list(index.tables.order_by("number").values_list("id", flat=True)))
        results["p50 latency ms"] = lsh_latency_ms(data, family, probes=probes, store=store, count=latency_queries)
        stats = bucket_stats(gallery_keys, data.gallery_labels)
        results.update(stats_columns(stats))
        results["scan"] = scan_results
        results.update(gallery_summary(data))
        parameters.update(
            index=index.pk, family=index.family, L=index.num_tables, K=index.hashes_per_table, **index.params
        )
    return _run_create(
        kind=EvaluationRun.Kind.EVALUATE, extractor=extractor, index=index, parameters=parameters, results=results
    )


def lsh_sweep(
    *,
    extractor: Extractor,
    collections: Sequence[Collection],
    distractors: Sequence[Collection] = (),
    family: str | Sequence[str] = "binary",
    grid: Sequence[tuple[int, int]],
    probes: Sequence[int] = (0,),
    w: float = 4.0,
    center: bool = False,
    seed: int = 0,
    queries: str = "all",
    latency_queries: int = LATENCY_QUERIES,
    progress: Progress[Any] | None = None,
) -> EvaluationRun:
    """The paper's section-5 tables: one row per (family, L, K, probes), each index built in memory.

    Rows hold exactly the paper's columns (``PAPER_COLUMNS``) plus ``IE (paper)``, recall@10, probes and the
    p50 latency of ``LshIndex.query`` on an in-memory store. Saves the rows as CSV and Markdown and a mAP-vs-IE
    plot (scan mAP as a horizontal line) under ``MEDIA_ROOT/evaluations/<id>/``.
    """
    families, probe_list = sweep_check(family, grid, probes, w)
    started = time.perf_counter()
    data = evaluation_data_load(extractor=extractor, collections=collections, distractors=distractors, queries=queries)
    ranking = scan_rank(data)
    scan_results = outcome_summary(data, ranking, scan_outcome(data, ranking))
    scan_results["p50 latency ms"] = scan_latency_ms(data, count=latency_queries)
    rows = sweep_rows(
        data,
        ranking,
        families=families,
        grid=grid,
        probes=probe_list,
        w=w,
        center=center,
        seed=seed,
        latency_queries=latency_queries,
        progress=progress,
    )
    results = {
        "rows": rows,
        "columns": list(SWEEP_COLUMNS),
        "scan": scan_results,
        "mAP": scan_results["mAP"],
        "seconds": time.perf_counter() - started,
        **gallery_summary(data),
    }
    parameters = {
        "collections": _names(collections),
        "distractors": _names(distractors),
        "families": families,
        "grid": [list(pair) for pair in grid],
        "probes": probe_list,
        "w": w,
        "center": center,
        "seed": seed,
        "queries": queries,
    }
    run = _run_create(kind=EvaluationRun.Kind.SWEEP, extractor=extractor, parameters=parameters, results=results)
    files = {
        "csv": _save_file(run, "sweep.csv", sweep_csv(rows).encode()),
        "markdown": _save_file(run, "sweep.md", sweep_markdown(rows, scan=scan_results).encode()),
    }
    run.figures = [_save_file(run, "sweep.png", sweep_plot_png(rows, scan_map=scan_results["mAP"]))]
    run.results = {**results, "files": files}
    run.save(update_fields=["figures", "results"])
    return run


def class_analysis(
    *,
    extractor: Extractor,
    collections: Sequence[Collection],
    distractors: Sequence[Collection] = (),
    index: LSHIndex | None = None,
    query_split: str | None = Image.Split.TEST,
) -> EvaluationRun:
    """The paper's Algorithm 1: per class, each query sketch against the rest of the gallery.

    The gallery is every image of ``collections`` (train and test) plus the distractors; each query is removed
    from its own ranking (R = class size - 1). ``query_split="test"`` queries with the test sketches,
    ``None`` with every sketch (the paper's exact protocol). Sequential scan unless ``index`` is given.
    Per class: mAP, min/max AP, range, std, best and worst query; with the classifier's per-class recall in
    ``extractor.details["per_class_recall"]`` (``{class name: recall in [0, 1]}``), Pearson(recall, mAP).
    """
    if index is not None and index.extractor_id != extractor.pk:
        raise EvaluationError(f"index {index.pk} was built on another extractor than {extractor.name!r}")
    data = evaluation_data_load(
        extractor=extractor,
        collections=collections,
        distractors=distractors,
        gallery_split=None,
        query_split=query_split,
    )
    ranking = scan_rank(data)
    if index is None:
        outcome = scan_outcome(data, ranking)
    else:
        family = index_family(index)
        outcome = lsh_outcome(data, ranking, family, family.keys(data.gallery_vectors))
    class_names = np.unique(data.query_labels)
    codes = np.searchsorted(class_names, data.query_labels)
    summaries = metrics.per_class_ap(outcome.ap_values, codes, data.query_ids)
    names = dict(enumerate(class_names.tolist()))
    per_class = [metrics.class_summary_to_dict(s, names) | {"queries": s.num_queries} for s in summaries]
    results: dict[str, Any] = {
        **outcome_summary(data, ranking, outcome),
        "method": "scan" if index is None else "lsh",
        **gallery_summary(data),
    }
    recall = _per_class_recall(extractor)
    if recall is None:
        results["classifier recall"] = RECALL_UNAVAILABLE
    else:
        paired = [(recall[row["class"]], row["mAP"]) for row in per_class if row["class"] in recall]
        for row in per_class:
            row["recall"] = recall.get(row["class"])
        if len(paired) >= 2:
            xs, ys = zip(*paired, strict=True)
            try:
                results["pearson recall vs mAP"] = metrics.pearson_correlation(xs, ys)
            except ValueError as exc:
                results["pearson recall vs mAP"] = None
                results["classifier recall"] = f"correlation undefined: {exc}"
        else:
            results["classifier recall"] = "classifier recall covers fewer than 2 evaluated classes"
    parameters = {
        "collections": _names(collections),
        "distractors": _names(distractors),
        "query_split": query_split or "all",
        "method": results["method"],
    }
    run = _run_create(
        kind=EvaluationRun.Kind.CLASS_ANALYSIS,
        extractor=extractor,
        index=index,
        parameters=parameters,
        results=results,
        per_class=per_class,
    )
    figures = [_save_file(run, "class_map.png", class_map_plot_png(per_class))]
    if recall is not None and "pearson recall vs mAP" in results:
        figures.append(_save_file(run, "recall_vs_map.png", recall_scatter_png(per_class, results)))
    run.figures = figures
    run.save(update_fields=["figures"])
    return run


def _per_class_recall(extractor: Extractor) -> dict[str, float] | None:
    value = (extractor.details or {}).get("per_class_recall")
    if not isinstance(value, Mapping) or not value:
        return None
    return {str(name): float(recall) for name, recall in value.items()}


RUN_KINDS = (EvaluationRun.Kind.EVALUATE, EvaluationRun.Kind.SWEEP, EvaluationRun.Kind.CLASS_ANALYSIS)


def evaluation_execute(*, kind: str, parameters: Mapping[str, Any]) -> EvaluationRun:
    """Run one evaluation from JSON parameters (names, not rows): what the Celery task calls."""
    extractor, collections, distractors, index = evaluation_inputs_resolve(
        extractor=parameters["extractor"],
        collections=parameters.get("collections", []),
        distractors=parameters.get("distractors", []),
        index=parameters.get("index"),
    )
    if kind == EvaluationRun.Kind.EVALUATE:
        return evaluation_run(
            extractor=extractor,
            collections=collections,
            distractors=distractors,
            index=index,
            queries=parameters.get("queries", "all"),
            probes=int(parameters.get("probes", 0)),
        )
    if kind == EvaluationRun.Kind.SWEEP:
        from evaluation.grid import parse_grid

        grid = parameters.get("grid", "")
        return lsh_sweep(
            extractor=extractor,
            collections=collections,
            distractors=distractors,
            family=parameters.get("families", ["binary"]),
            grid=parse_grid(grid) if isinstance(grid, str) else [tuple(pair) for pair in grid],
            probes=[int(p) for p in parameters.get("probe_list", [0])],
            w=float(parameters.get("w", 4.0)),
            center=bool(parameters.get("center", False)),
            queries=parameters.get("queries", "all"),
        )
    if kind == EvaluationRun.Kind.CLASS_ANALYSIS:
        return class_analysis(extractor=extractor, collections=collections, distractors=distractors, index=index)
    raise EvaluationError(f"unknown evaluation kind {kind!r}: use {', '.join(RUN_KINDS)}")


def evaluation_request_check(*, kind: str, parameters: Mapping[str, Any]) -> None:
    """Check a queued run's kind and names now (so a typo is a 400, not a failed job)."""
    if kind not in RUN_KINDS:
        raise EvaluationError(f"unknown evaluation kind {kind!r}: use {', '.join(RUN_KINDS)}")
    evaluation_inputs_resolve(
        extractor=parameters["extractor"],
        collections=parameters.get("collections", []),
        distractors=parameters.get("distractors", []),
        index=parameters.get("index"),
    )
