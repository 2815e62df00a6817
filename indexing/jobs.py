"""Long-running work as Celery tasks tracked by a Job row: the one place that keeps a Job's bookkeeping.

Every task that does the work of a Job (``indexing.tasks``, ``evaluation.tasks``) is declared with
``@shared_task(base=JobTask, bind=True, job_kind=Job.Kind.X)`` and returns a :class:`JobOutcome`; ``JobTask``
marks the row running, then done with the outcome's message, or failed with the exception (which it re-raises),
and hands Celery the outcome's value. ``task.enqueue(**kwargs)`` creates the row and queues the task once the row
is committed. Services never import this module nor the tasks: the APIs, views, admin actions and commands call a
tasks module's ``*_queue`` function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Task
from celery.exceptions import Retry
from django.db import transaction
from django.db.models import F
from kombu.exceptions import OperationalError as KombuOperationalError

from indexing.models import Job

__all__ = [
    "JobOutcome",
    "JobProgress",
    "JobTask",
    "QueueError",
    "QueueFn",
    "job_chunk_done",
    "job_create",
    "job_enqueue",
    "job_finish",
    "job_progress",
]

QueueFn = Callable[..., Job]


class QueueError(RuntimeError):
    """The work could not be queued (broker unreachable, or the capability is not available)."""


# ---------------------------------------------------------------------------------------------------------------
# The Job row


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


def job_chunk_done(*, job_id: int, count: int, failed: int = 0) -> bool:
    """Add a finished chunk's ``count`` to ``done`` (one atomic UPDATE); True for the chunk that completes the Job."""
    with transaction.atomic():
        Job.objects.filter(id=job_id).update(done=F("done") + count)
        job = Job.objects.select_for_update().get(id=job_id)
        if failed:
            Job.objects.filter(id=job_id).update(message=F("message") + f"{failed} images could not be embedded. ")
        return job.done >= job.total and job.status == Job.Status.RUNNING


class JobProgress:
    """A ``progress(step)`` callback for a service: adds up the steps and writes ``done`` every ``every`` items."""

    def __init__(self, job_id: int, *, every: int = 1) -> None:
        self.job_id = job_id
        self.every = every
        self.done = 0

    def __call__(self, step: int) -> None:
        self.done += step
        if self.done % self.every == 0:
            job_progress(job_id=self.job_id, done=self.done)

    def total(self, total: int) -> None:
        job_progress(job_id=self.job_id, done=0, total=total)


# ---------------------------------------------------------------------------------------------------------------
# The base task and queueing


@dataclass(frozen=True)
class JobOutcome:
    """What a job task's body returns: the task's result (JSON) and the Job's closing message."""

    value: Any
    message: str
    finished: bool = True  # False: the work goes on in other tasks (chunks), the last of which closes the row


class JobTask(Task):  # type: ignore[type-arg]
    """Base of the tasks that do a Job's work: owns the row's status, closing message and error.

    The task body takes ``job_id`` as a keyword and returns a :class:`JobOutcome`; it reports progress itself
    (``job_progress`` or a :class:`JobProgress`) where it has steps to count.
    """

    job_kind: str = ""  # Job.Kind of the rows enqueue creates; set per task (``@shared_task(job_kind=...)``)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        job_id = kwargs["job_id"]
        Job.objects.filter(id=job_id).update(status=Job.Status.RUNNING)
        try:
            outcome = self.run(*args, **kwargs)  # not super().__call__: the tracer already pushed the request
        except Retry:
            raise  # Celery runs it again: the row stays running
        except Exception as exc:
            job_finish(job_id=job_id, status=Job.Status.FAILED, message=f"{exc.__class__.__name__}: {exc}")
            raise
        if not isinstance(outcome, JobOutcome):
            raise TypeError(f"{self.name} must return a JobOutcome, got {type(outcome).__name__}")
        if outcome.finished:
            job_finish(job_id=job_id, status=Job.Status.DONE, message=outcome.message)
        return outcome.value

    def enqueue(self, *, job_parameters: dict[str, Any] | None = None, **kwargs: Any) -> Job:
        """Create the Job row (its parameters: ``job_parameters``, else ``kwargs``) and queue this task for it."""
        job = job_create(kind=self.job_kind, parameters=kwargs if job_parameters is None else job_parameters)
        return job_enqueue(job=job, task=self, **kwargs)


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
