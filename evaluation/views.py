"""The evaluation dashboard: server-rendered pages, no JavaScript (runs, tables, plots, best/worst sketches)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.files.storage import default_storage
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import redirect, render

from evaluation.forms import QueueRunForm
from evaluation.models import EvaluationRun
from evaluation.protocol_maths import EvaluationError
from evaluation.reports import PAPER_COLUMNS, SWEEP_COLUMNS, run_headline
from evaluation.tasks import evaluation_queue
from indexing.jobs import QueueError
from indexing.models import Image

CLASS_COLUMNS = ["class", "queries", "mAP", "min AP", "max AP", "max-min range", "std", "recall"]


def run_list(request: HttpRequest) -> HttpResponse:
    form = QueueRunForm() if request.user.is_staff else None
    if request.method == "POST":
        if not request.user.is_staff:
            return HttpResponseForbidden("only staff can queue an evaluation")
        form = QueueRunForm(request.POST)
        if form.is_valid():
            kind, parameters = form.parameters()
            try:
                job = evaluation_queue(kind=kind, parameters=parameters)
            except (EvaluationError, QueueError) as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"queued {kind} as job #{job.pk} ({job.status}) {job.message}".strip())
                return redirect("evaluation-dashboard")
    runs = list(EvaluationRun.objects.select_related("extractor", "index").order_by("-created_at", "-id")[:200])
    rows = [{"run": run, "headline": run_headline(run)} for run in runs]
    context: dict[str, Any] = {"rows": rows, "form": form}
    if not rows:
        context["example"] = _first_run_example()
    return render(request, "evaluation/run_list.html", context)


def _first_run_example() -> dict[str, str]:
    """The names for the empty page's example commands: the default index's, else the demo's (make run builds it)."""
    from indexing.selectors import index_get_default

    index = index_get_default()
    if index is None:
        return {"collection": "demo", "extractor": "mobilenet_v1", "index": "default"}
    collection = index.collections.order_by("name").first()
    return {
        "collection": collection.name if collection else "demo",
        "extractor": index.extractor.name,
        "index": index.name,
    }


def _cells(row: dict[str, Any], columns: list[str]) -> list[Any]:
    return [row.get(column) for column in columns]


def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = EvaluationRun.objects.select_related("extractor", "index").filter(pk=run_id).first()
    if run is None:
        raise Http404(f"no evaluation run {run_id}")
    results = dict(run.results or {})
    context: dict[str, Any] = {
        "run": run,
        "headline": run_headline(run),
        "figure_urls": [default_storage.url(name) for name in run.figures],  # under MEDIA_URL
    }
    if run.kind == EvaluationRun.Kind.SWEEP:
        columns = list(SWEEP_COLUMNS)
        context["sweep_columns"] = columns
        context["sweep_rows"] = [_cells(row, columns) for row in results.pop("rows", [])]
        results.pop("columns", None)
    if run.kind == EvaluationRun.Kind.CLASS_ANALYSIS:
        ids = {row[key] for row in run.per_class for key in ("best query id", "worst query id")}
        images = {image.pk: image for image in Image.objects.filter(pk__in=ids)}
        context["class_columns"] = CLASS_COLUMNS
        context["class_rows"] = [
            {
                "cells": _cells(row, CLASS_COLUMNS),
                "best": images.get(row["best query id"]),
                "worst": images.get(row["worst query id"]),
            }
            for row in sorted(run.per_class, key=lambda row: row["mAP"], reverse=True)
        ]
    nested = {key: value for key, value in results.items() if isinstance(value, dict)}
    context["results"] = [(key, value) for key, value in results.items() if not isinstance(value, dict | list)]
    context["nested"] = [(key, list(value.items())) for key, value in nested.items()]
    context["paper_columns"] = PAPER_COLUMNS
    return render(request, "evaluation/run_detail.html", context)
