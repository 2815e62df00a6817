"""Celery tasks of the indexing app and the functions that queue them (STYLE.md G6).

Each task parses ids and calls one service; ``indexing.jobs.JobTask`` keeps its Job row. Callers (the admin's
actions, tests) queue work with the ``*_queue`` functions below, never through a service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import shared_task

from indexing.jobs import JobOutcome, JobProgress, JobTask, job_chunk_done, job_finish, job_progress
from indexing.models import Job

EXTRACT_CHUNK = 256  # images per extraction task: a few seconds of CNN work on one core


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
    """Fan out: the images without a vector, in chunks, one Celery task each (a group any worker may take).

    Each chunk's Feature writes hash its images into the active index at once (indexing.services.updates); the
    chunk that completes the job rebuilds the index if it has outgrown its parameters. The Job's ``done`` is the
    sum over chunks.
    """
    from celery import group

    from indexing.models import Collection, Extractor
    from indexing.selectors import images_without_features

    extractor = Extractor.objects.get(pk=extractor_id)
    chunks = [
        (collection.pk, ids[start : start + EXTRACT_CHUNK])
        for collection in Collection.objects.filter(pk__in=collection_ids).order_by("pk")
        for ids in [images_without_features(collection=collection, extractor=extractor)]
        for start in range(0, len(ids), EXTRACT_CHUNK)
    ]
    total = sum(len(ids) for _, ids in chunks)
    job_progress(job_id=job_id, done=0, total=total)
    if not chunks:
        return JobOutcome(0, "nothing to embed: every image has a vector")
    group(
        extract_chunk_task.s(job_id=job_id, collection_id=c, extractor_id=extractor_id, image_ids=ids)
        for c, ids in chunks
    ).apply_async()
    return JobOutcome(total, f"{len(chunks)} chunks queued", finished=False)


@shared_task(bind=True, acks_late=True)
def extract_chunk_task(self: Any, *, job_id: int, collection_id: int, extractor_id: int, image_ids: list[int]) -> int:
    """Embed one chunk (upserts: a redelivered chunk redoes only its unfinished images); the last one closes the Job."""
    from indexing.models import Collection, Extractor
    from indexing.services.extraction import collection_extract_features

    extractor = Extractor.objects.get(pk=extractor_id)
    try:
        report = collection_extract_features(
            collection=Collection.objects.get(pk=collection_id), extractor=extractor, image_ids=image_ids
        )
    except Exception as exc:
        job_finish(job_id=job_id, status=Job.Status.FAILED, message=f"{exc.__class__.__name__}: {exc}")
        raise
    if job_chunk_done(job_id=job_id, count=len(image_ids), failed=len(report.failed)):
        _after_extraction(job_id=job_id, extractor_id=extractor_id)
    return report.embedded


def _after_extraction(*, job_id: int, extractor_id: int) -> None:
    """The job's last chunk: rebuild the active index if it has outgrown its parameters, and close the Job."""
    from django.conf import settings

    from indexing.models import Extractor
    from indexing.selectors import index_get_active, index_needs_rebuild
    from indexing.services.index import index_reindex

    extractor = Extractor.objects.get(pk=extractor_id)
    job = Job.objects.get(pk=job_id)
    message = f"embedded {job.done} images (added to the active index as they were written)"
    active = index_get_active()
    growth = settings.SKETCHSEARCH_REBUILD_GROWTH
    if active is not None and active.extractor_id == extractor.pk and index_needs_rebuild(active, growth=growth):
        message += f"; reindexed: {index_reindex(extractor=extractor)} is active"
    job_finish(job_id=job_id, status=Job.Status.DONE, message=message)


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


@shared_task(base=JobTask, bind=True, acks_late=True, job_kind=Job.Kind.INDEX)
def index_reindex_task(self: JobTask, *, job_id: int, name: str) -> JobOutcome:
    """Rebuild the active version of ``name`` (parameters re-tuned on the collection as it is now) and flip it."""
    from indexing.services.index import index_reindex

    index = index_reindex(name=name)
    if index is None:
        return JobOutcome(None, f"no active index named {name!r}: nothing rebuilt")
    return JobOutcome(index.pk, f"rebuilt and activated {index}")


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


def index_reindex_queue(*, name: str) -> Job:
    """Queue a rebuild of the active version of ``name``."""
    return index_reindex_task.enqueue(name=name)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)
