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
