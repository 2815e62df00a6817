"""Celery tasks of the evaluation app: thin wrappers that call one service (STYLE.md G6)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from indexing.models import Job


@shared_task(bind=True, acks_late=True)
def evaluation_run_task(self: Any, *, job_id: int, kind: str, parameters: dict[str, Any]) -> int:
    """Run one evaluation and return the EvaluationRun id; the Job row says how it went."""
    from evaluation.services import evaluation_execute
    from indexing.services.jobs import job_finish, job_progress

    job_progress(job_id=job_id, done=0, total=1)
    try:
        run = evaluation_execute(kind=kind, parameters=parameters)
    except Exception as exc:
        job_finish(job_id=job_id, status=Job.Status.FAILED, message=f"{exc.__class__.__name__}: {exc}")
        raise
    job_progress(job_id=job_id, done=1)
    job_finish(job_id=job_id, status=Job.Status.DONE, message=f"evaluation run #{run.pk}")
    return run.pk
