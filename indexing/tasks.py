"""Celery tasks of the indexing app and the functions that queue them (STYLE.md G6).

Each task parses ids and calls one service; ``indexing.jobs.JobTask`` keeps its Job row. Callers (the admin's
actions, tests) queue work with the ``*_queue`` functions below, never through a service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import shared_task

from indexing.jobs import JobOutcome, JobProgress, JobTask, job_progress
from indexing.models import Job


@shared_task(base=JobTask, bind=True, job_kind=Job.Kind.IMPORT)
def collection_import_task(
    self: JobTask, *, job_id: int, path: str, name: str, kind: str, test_per_class: int, use_labels: bool = True
) -> JobOutcome:
    # No retry: a bad path or argument would fail the same way again.
    from indexing.services.importer import collection_import

    progress = JobProgress(job_id, every=200)
    report = collection_import(
        path=Path(path),
        name=name,
        kind=kind,
        test_per_class=test_per_class,
        use_labels=use_labels,
        progress=progress,
        on_total=progress.total,
    )
    job_progress(job_id=job_id, done=report.scanned)
    counts = {"imported": report.imported, "duplicates": report.duplicates, "skipped": len(report.skipped)}
    return JobOutcome(counts, report.summary())


@shared_task(base=JobTask, bind=True, acks_late=True, job_kind=Job.Kind.EXTRACT)
def collection_extract_features_task(
    self: JobTask, *, job_id: int, collection_ids: list[int], extractor_id: int
) -> JobOutcome:
    """Embed what is missing (upserts: a redelivered task redoes only unfinished images), then reindex."""
    from indexing.models import Collection, Extractor
    from indexing.services.extraction import collection_extract_features
    from indexing.services.index import index_reindex

    extractor = Extractor.objects.get(pk=extractor_id)
    progress = JobProgress(job_id)
    reports = [
        collection_extract_features(collection=collection, extractor=extractor, progress=progress)
        for collection in Collection.objects.filter(pk__in=collection_ids)
    ]
    embedded = sum(report.embedded for report in reports)
    messages = [report.summary() for report in reports]
    reindexed = index_reindex(extractor=extractor) if embedded else None
    if reindexed is not None:
        messages.append(f"reindexed: {reindexed} is active")
    return JobOutcome(embedded, "; ".join(messages))


@shared_task(base=JobTask, bind=True, acks_late=True, job_kind=Job.Kind.INDEX)
def index_build_task(
    self: JobTask, *, job_id: int, collection_ids: list[int], extractor_id: int, **options: Any
) -> JobOutcome:
    from indexing.models import Collection, Extractor
    from indexing.services.index import DEFAULT_CENTER, DEFAULT_FAMILY, index_build

    index = index_build(
        extractor=Extractor.objects.get(pk=extractor_id),
        collections=list(Collection.objects.filter(pk__in=collection_ids)),
        family=options.get("family", DEFAULT_FAMILY),
        # L, K and probes: tuned unless given, as build_index and setup_demo do.
        num_tables=_optional_int(options.get("num_tables")),
        hashes_per_table=_optional_int(options.get("hashes_per_table")),
        probes=_optional_int(options.get("probes")),
        params=dict(options.get("params") or ({"w": float(options["w"])} if "w" in options else {})),
        seed=int(options.get("seed", 0)),
        center=bool(options.get("center", DEFAULT_CENTER)),
        name=options.get("name", "default"),
    )
    return JobOutcome(index.pk, f"built and activated {index}")


# ---------------------------------------------------------------------------------------------------------------
# Queueing (what the admin's actions and the tests call)


def collection_import_queue(*, path: str, name: str, kind: str, test_per_class: int, use_labels: bool = True) -> Job:
    return collection_import_task.enqueue(
        path=path, name=name, kind=kind, test_per_class=test_per_class, use_labels=use_labels
    )


def collection_extract_features_queue(*, collection_ids: list[int], extractor_id: int) -> Job:
    """Queue extraction of the images without a vector, then a reindex of the active index (if any)."""
    return collection_extract_features_task.enqueue(collection_ids=collection_ids, extractor_id=extractor_id)


def index_build_queue(*, collection_ids: list[int], extractor_id: int, **options: Any) -> Job:
    """Queue a new index version over the collections (defaults: the active index's parameters)."""
    return index_build_task.enqueue(collection_ids=collection_ids, extractor_id=extractor_id, **options)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)
