"""Celery tasks: thin wrappers that parse ids and call one service (STYLE.md G6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import shared_task

from indexing.models import Job


@shared_task(bind=True, max_retries=3)
def collection_import_task(
    self: Any, *, job_id: int, path: str, name: str, kind: str, test_per_class: int, use_labels: bool = True
) -> dict[str, Any]:
    from indexing.services.importer import collection_import
    from indexing.services.jobs import job_finish, job_progress

    state = {"done": 0}

    def progress(step: int) -> None:
        state["done"] += step
        if state["done"] % 200 == 0:
            job_progress(job_id=job_id, done=state["done"])

    try:
        report = collection_import(
            path=Path(path),
            name=name,
            kind=kind,
            test_per_class=test_per_class,
            use_labels=use_labels,
            progress=progress,
            on_total=lambda total: job_progress(job_id=job_id, done=0, total=total),
        )
    except ValueError as exc:  # a bad path or argument: retrying would fail the same way
        job_finish(job_id=job_id, status=Job.Status.FAILED, message=str(exc))
        raise
    job_progress(job_id=job_id, done=report.scanned)
    job_finish(job_id=job_id, status=Job.Status.DONE, message=report.summary())
    return {"imported": report.imported, "duplicates": report.duplicates, "skipped": len(report.skipped)}


@shared_task(bind=True, max_retries=3, acks_late=True)
def collection_extract_features_task(self: Any, *, job_id: int, collection_ids: list[int], extractor_id: int) -> int:
    """Embed what is missing (upserts: a redelivered task redoes only unfinished images), then reindex."""
    from indexing.models import Collection, Extractor
    from indexing.services.extraction import collection_extract_features
    from indexing.services.index import index_reindex
    from indexing.services.jobs import job_finish, job_progress

    extractor = Extractor.objects.get(pk=extractor_id)
    state = {"done": 0}
    embedded = 0
    messages = []
    try:
        for collection in Collection.objects.filter(pk__in=collection_ids):

            def progress(step: int) -> None:
                state["done"] += step
                job_progress(job_id=job_id, done=state["done"])

            report = collection_extract_features(collection=collection, extractor=extractor, progress=progress)
            embedded += report.embedded
            messages.append(report.summary())
        reindexed = index_reindex(extractor=extractor) if embedded else None
    except Exception as exc:
        job_finish(job_id=job_id, status=Job.Status.FAILED, message=f"{exc.__class__.__name__}: {exc}")
        raise
    if reindexed is not None:
        messages.append(f"reindexed: {reindexed} is active")
    job_finish(job_id=job_id, status=Job.Status.DONE, message="; ".join(messages))
    return embedded


@shared_task(bind=True, acks_late=True)
def index_build_task(self: Any, *, job_id: int, collection_ids: list[int], extractor_id: int, **options: Any) -> int:
    from indexing.models import Collection, Extractor
    from indexing.services.index import DEFAULT_CENTER, DEFAULT_FAMILY, index_build
    from indexing.services.jobs import job_finish

    try:
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
    except Exception as exc:
        job_finish(job_id=job_id, status=Job.Status.FAILED, message=f"{exc.__class__.__name__}: {exc}")
        raise
    job_finish(job_id=job_id, status=Job.Status.DONE, message=f"built and activated {index}")
    return index.pk


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)
