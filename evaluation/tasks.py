"""Celery tasks of the evaluation app and the function that queues them (STYLE.md G6).

The task calls one service; ``indexing.jobs.JobTask`` keeps its Job row. The API and the dashboard queue runs
with :func:`evaluation_queue`, never through a service.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from evaluation.runs import evaluation_execute, evaluation_request_check
from indexing.jobs import JobOutcome, JobTask, job_progress
from indexing.models import Job


@shared_task(base=JobTask, bind=True, acks_late=True, job_kind=Job.Kind.EVALUATE)
def evaluation_run_task(self: JobTask, *, job_id: int, kind: str, parameters: dict[str, Any]) -> JobOutcome:
    """Run one evaluation; the task's result is the EvaluationRun id."""
    job_progress(job_id=job_id, done=0, total=1)
    run = evaluation_execute(kind=kind, parameters=parameters)
    job_progress(job_id=job_id, done=1)
    return JobOutcome(run.pk, f"evaluation run #{run.pk}")


def evaluation_queue(*, kind: str, parameters: dict[str, Any]) -> Job:
    """Check the names now (so a typo is a 400, not a failed job), then queue the run as a Job on Celery."""
    evaluation_request_check(kind=kind, parameters=parameters)
    return evaluation_run_task.enqueue(job_parameters={"kind": kind, **parameters}, kind=kind, parameters=parameters)
