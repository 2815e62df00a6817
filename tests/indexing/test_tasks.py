from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from indexing.models import Extractor, Image, Job
from indexing.tasks import collection_import_queue, index_build_queue
from sketchsite.celery import app
from tests.conftest import redis_reachable, write_tu_berlin

REDIS_URL = os.environ.get("CELERY_BROKER_URL") or "redis://127.0.0.1:6379/15"


@pytest.fixture
def real_worker() -> Iterator[None]:
    """A Celery worker thread consuming from Redis (celery.contrib.testing), not eager mode."""
    if not redis_reachable(REDIS_URL):
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    from celery.contrib.testing.worker import start_worker

    keys = ("broker_url", "task_always_eager", "broker_connection_retry")
    previous = {key: app.conf[key] for key in keys}
    app.conf.update(broker_url=REDIS_URL, task_always_eager=False, broker_connection_retry=False)
    _drop_connection_pools()  # connections opened under the eager default would keep its broker
    app.control.purge()  # messages left by an interrupted earlier run would run first, against other rows
    try:
        with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, shutdown_timeout=30):
            yield
    finally:
        app.conf.update(previous)
        _drop_connection_pools()


def _drop_connection_pools() -> None:
    # What Celery itself does after a fork (Celery._after_fork): forget pooled broker connections and producers.
    pool = app.__dict__.get("_pool")
    if pool is not None:
        pool.force_close_all()
    app.__dict__["_pool"] = None
    app.amqp.__dict__["_producer_pool"] = None


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_import_runs_through_a_real_worker(real_worker: None, tmp_path: Path) -> None:
    root = write_tu_berlin(tmp_path / "tu", {"cat": [1, 2, 3], "dog": [1, 2]})
    job = collection_import_queue(path=str(root), name="tu", kind="sketches", test_per_class=1)
    assert job.celery_task_id
    # The worker thread writes the Job row when it finishes; poll the database, not a result backend.
    deadline = time.monotonic() + 60
    while job.status not in (Job.Status.DONE, Job.Status.FAILED) and time.monotonic() < deadline:
        time.sleep(0.1)
        job.refresh_from_db()
    assert job.status == Job.Status.DONE, job.message
    assert "imported 5 of 5" in job.message
    assert Image.objects.filter(split="test").count() == 2


@pytest.mark.django_db
def test_eager_mode_runs_the_task_in_process(tmp_path: Path, django_capture_on_commit_callbacks: Any) -> None:
    if not app.conf.task_always_eager:
        pytest.skip("a broker is configured: tasks are not eager in this run")
    root = write_tu_berlin(tmp_path / "tu", {"cat": [1, 2]})
    with django_capture_on_commit_callbacks(execute=True):
        job = collection_import_queue(path=str(root), name="tu", kind="sketches", test_per_class=0)
    job.refresh_from_db()
    assert job.status == Job.Status.DONE
    assert Image.objects.count() == 2


@pytest.mark.django_db
def test_a_failed_import_marks_its_job_failed(tmp_path: Path, django_capture_on_commit_callbacks: Any) -> None:
    if not app.conf.task_always_eager:
        pytest.skip("a broker is configured: tasks are not eager in this run")
    with pytest.raises(ValueError, match="no such folder"), django_capture_on_commit_callbacks(execute=True):
        collection_import_queue(path=str(tmp_path / "missing"), name="x", kind="sketches", test_per_class=0)
    job = Job.objects.get()
    assert job.status == Job.Status.FAILED
    assert "no such folder" in job.message


@pytest.mark.django_db
def test_a_failed_task_marks_its_job_failed_with_the_error(django_capture_on_commit_callbacks: Any) -> None:
    # The base task (indexing.jobs.JobTask) keeps the row: running, then failed with the exception's class and text.
    if not app.conf.task_always_eager:
        pytest.skip("a broker is configured: tasks are not eager in this run")
    with pytest.raises(Extractor.DoesNotExist), django_capture_on_commit_callbacks(execute=True):
        index_build_queue(collection_ids=[], extractor_id=999_999)
    job = Job.objects.get()
    assert (job.kind, job.status) == (Job.Kind.INDEX, Job.Status.FAILED)
    assert job.parameters == {"collection_ids": [], "extractor_id": 999_999}
    assert job.message.startswith("DoesNotExist: ")


@pytest.mark.django_db
def test_queued_extraction_fans_out_and_adds_new_images_to_the_active_index(
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    if not app.conf.task_always_eager:
        pytest.skip("a broker is configured: tasks are not eager in this run")
    from indexing import tasks
    from indexing.models import Feature, IndexAddition, LSHIndex
    from indexing.services.search import sketch_search
    from tests.conftest import sketch_png
    from tests.factories import make_image, make_indexed_collection, use_tiny_backbone

    use_tiny_backbone(monkeypatch)
    monkeypatch.setattr(tasks, "EXTRACT_CHUNK", 2)  # 5 new images: chunks of 2, 2 and 1
    collection, extractor, first = make_indexed_collection()
    new = [make_image(collection, seed=4242 + i, label="class0") for i in range(5)]
    chunks: list[list[int]] = []
    from indexing.services import extraction

    original = extraction.collection_extract_features

    def spy(**kwargs: Any) -> Any:
        chunks.append(list(kwargs["image_ids"]))
        return original(**kwargs)

    monkeypatch.setattr("indexing.services.extraction.collection_extract_features", spy)
    with django_capture_on_commit_callbacks(execute=True):
        job = tasks.collection_extract_features_queue(collection_ids=[collection.pk], extractor_id=extractor.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.DONE, job.message
    assert (job.done, job.total) == (5, 5)
    assert chunks == [[new[0].pk, new[1].pk], [new[2].pk, new[3].pk], [new[4].pk]]
    assert Feature.objects.filter(extractor=extractor).count() == 29
    active = LSHIndex.objects.get(is_active=True)
    assert active.pk == first.pk  # no rebuild: 29 images is not 4 x 24
    assert IndexAddition.objects.filter(index=active).count() == 5
    assert sketch_search(image=sketch_png(4244), top_k=1).hits[0].image_id == new[2].pk


@pytest.mark.django_db
def test_an_extraction_that_outgrows_the_index_rebuilds_it(
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    if not app.conf.task_always_eager:
        pytest.skip("a broker is configured: tasks are not eager in this run")
    from indexing.models import Feature, LSHIndex
    from indexing.tasks import collection_extract_features_queue
    from tests.factories import make_image, make_indexed_collection, use_tiny_backbone

    use_tiny_backbone(monkeypatch)
    settings.SKETCHSEARCH_REBUILD_GROWTH = 1.02  # 24 -> 25 images is past it
    collection, extractor, first = make_indexed_collection()
    make_image(collection, seed=4242, label="class0")
    with django_capture_on_commit_callbacks(execute=True):
        job = collection_extract_features_queue(collection_ids=[collection.pk], extractor_id=extractor.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.DONE, job.message
    assert "reindexed" in job.message
    assert Feature.objects.filter(extractor=extractor).count() == 25
    active = LSHIndex.objects.get(is_active=True)
    assert active.pk != first.pk
    assert active.item_count == 25
    assert (active.family, active.num_tables, active.hashes_per_table) == (first.family, first.num_tables, 4)
