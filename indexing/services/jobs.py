"""Queue long-running work on Celery and track it as a Job row (progress shown in the admin)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import transaction
from kombu.exceptions import OperationalError as KombuOperationalError

from indexing.models import Job

QueueFn = Callable[..., Job]


class QueueError(RuntimeError):
    """The work could not be queued (broker unreachable, or the capability is not available)."""


def job_create(*, kind: str, parameters: dict[str, Any], total: int = 0) -> Job:
    return Job.objects.create(kind=kind, parameters=parameters, total=total)


def job_progress(*, job_id: int, done: int, total: int | None = None, message: str = "") -> None:
    # An UPDATE, not save(): a worker must not overwrite fields the admin or another chunk changed.
    fields: dict[str, Any] = {"done": done, "status": Job.Status.RUNNING}
    if total is not None:
        fields["total"] = total
    if message:
        fields["message"] = message
    Job.objects.filter(id=job_id).update(**fields)


def job_finish(*, job_id: int, status: str, message: str = "") -> None:
    Job.objects.filter(id=job_id).update(status=status, message=message)


def job_enqueue(*, job: Job, task: Any, **kwargs: Any) -> Job:
    """Send ``task`` with ``job_id`` once the Job row is committed; report a broker outage as QueueError."""

    def send() -> None:
        try:
            result = task.delay(job_id=job.id, **kwargs)
        except KombuOperationalError as exc:
            job_finish(job_id=job.id, status=Job.Status.FAILED, message=f"broker unreachable: {exc}")
            raise QueueError(f"cannot queue {job.kind}: the task broker is unreachable ({exc})") from exc
        Job.objects.filter(id=job.id).update(celery_task_id=result.id or "")

    # Inside a transaction the task is sent on commit, so a worker never looks for a Job row it cannot see yet.
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(send)
    else:
        send()
    job.refresh_from_db()
    return job


def collection_import_queue(*, path: str, name: str, kind: str, test_per_class: int, use_labels: bool = True) -> Job:
    from indexing.tasks import collection_import_task

    params = {"path": path, "name": name, "kind": kind, "test_per_class": test_per_class, "use_labels": use_labels}
    return job_enqueue(job=job_create(kind=Job.Kind.IMPORT, parameters=params), task=collection_import_task, **params)


def collection_extract_features_queue(*, collection_ids: list[int], extractor_id: int) -> Job:
    """Queue extraction of the images without a vector, then a reindex of the active index (if any)."""
    from indexing.tasks import collection_extract_features_task

    params = {"collection_ids": collection_ids, "extractor_id": extractor_id}
    job = job_create(kind=Job.Kind.EXTRACT, parameters=params)
    return job_enqueue(job=job, task=collection_extract_features_task, **params)


def index_build_queue(*, collection_ids: list[int], extractor_id: int, **options: Any) -> Job:
    """Queue a new index version over the collections (defaults: the active index's parameters)."""
    from indexing.tasks import index_build_task

    params = {"collection_ids": collection_ids, "extractor_id": extractor_id, **options}
    return job_enqueue(job=job_create(kind=Job.Kind.INDEX, parameters=params), task=index_build_task, **params)
