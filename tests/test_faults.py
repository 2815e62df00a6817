"""Faults on the real services: database connections killed, the broker down, a worker killed, reindex races."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db import connection
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from indexing.jobs import QueueError
from indexing.models import Collection, Feature, Job, LSHIndex
from indexing.services.index import index_build
from indexing.services.search import sketch_search
from indexing.tasks import collection_extract_features_queue
from sketchsite.celery import app
from tests.conftest import DEMO_DATA, redis_reachable, sketch_png
from tests.factories import make_indexed_collection, use_tiny_backbone

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/14"

needs_postgres = pytest.mark.skipif(
    os.environ.get("DATABASE_URL", "").startswith("postgres") is False, reason="needs DATABASE_URL=postgres://..."
)


@pytest.fixture
def broker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point Celery at a broker URL (non-eager) for one test and restore it afterwards."""
    url: str = request.param
    # Celery reads the CELERY_BROKER_URL environment variable before its own configuration (CI sets it).
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    keys = ("broker_url", "task_always_eager", "task_publish_retry")
    previous = {key: app.conf[key] for key in keys}
    app.conf.update(broker_url=url, task_always_eager=False, task_publish_retry=False)
    app._after_fork()  # type: ignore[attr-defined]  # drop connection pools bound to the previous broker URL (celery's own reset hook)
    try:
        yield url
    finally:
        app.conf.update(previous)
        app._after_fork()  # type: ignore[attr-defined]


@pytest.mark.django_db(transaction=True)
def test_searches_during_reindexing_are_answered_from_one_complete_version(monkeypatch: pytest.MonkeyPatch) -> None:
    use_tiny_backbone(monkeypatch)
    collection, extractor, first = make_indexed_collection(num_tables=4, hashes_per_table=3)
    expected_size = first.item_count
    errors: list[BaseException] = []
    answers: list[tuple[int, int]] = []
    stop = threading.Event()

    def search_loop() -> None:
        try:
            while not stop.is_set():
                result = sketch_search(image=sketch_png(77), top_k=5, probes=1)
                answers.append((result.index.pk, len(result.hits)))
                assert result.collection_size == expected_size
                assert result.candidates > 0  # never a half-built (empty) version
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=search_loop) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(4):
            index_build(extractor=extractor, collections=[collection], family="binary", num_tables=4,
                        hashes_per_table=3, center=True)  # fmt: skip
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors, errors
    assert len({pk for pk, _ in answers}) >= 2, "the searches should have seen more than one version"
    assert all(hits == 5 for _, hits in answers)
    assert LSHIndex.objects.filter(is_active=True).count() == 1


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_database_connection_killed_during_a_search_is_a_503_and_the_next_search_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_tiny_backbone(monkeypatch)
    make_indexed_collection()
    import search.apis

    original = search.apis.index_get_default
    killed = {"done": False}

    def kill_then_query(**kwargs: object) -> object:
        if not killed["done"]:
            killed["done"] = True
            # A real fault: another session terminates this request's backend, as a database restart would.
            pid = connection.connection.info.backend_pid
            with connection.cursor():
                pass
            import psycopg

            params = connection.get_connection_params()
            with psycopg.connect(**{k: v for k, v in params.items() if k != "cursor_factory"}) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        return original()

    monkeypatch.setattr(search.apis, "index_get_default", kill_then_query)
    client = APIClient()
    body = {"image_id": Collection.objects.get().images.first().pk}  # type: ignore[union-attr]
    first = client.post("/api/search/", body, format="json")
    assert first.status_code == 503
    assert "database is unavailable" in first.json()["error"]
    second = client.post("/api/search/", body, format="json")
    assert second.status_code == 200, second.content
    assert second.json()["results"]


@pytest.mark.django_db
@pytest.mark.parametrize("broker", ["redis://127.0.0.1:9/0"], indirect=True)  # nothing listens on port 9
def test_with_the_broker_down_search_works_and_queueing_reports_the_outage(
    monkeypatch: pytest.MonkeyPatch, broker: str, django_capture_on_commit_callbacks: Any
) -> None:
    use_tiny_backbone(monkeypatch)
    collection, extractor, _ = make_indexed_collection()
    assert sketch_search(image=sketch_png(3), top_k=3).hits  # search needs no broker
    with pytest.raises(QueueError, match="broker is unreachable"), django_capture_on_commit_callbacks(execute=True):
        collection_extract_features_queue(collection_ids=[collection.pk], extractor_id=extractor.pk)
    job = Job.objects.get(kind=Job.Kind.EXTRACT)
    assert job.status == Job.Status.FAILED
    assert "broker unreachable" in job.message


@needs_postgres
@pytest.mark.skipif(not redis_reachable(REDIS_URL), reason=f"Redis is not reachable at {REDIS_URL}")
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("broker", [REDIS_URL], indirect=True)
def test_a_worker_killed_mid_extraction_loses_and_doubles_nothing(
    settings: Settings, tmp_path: Path, broker: str
) -> None:
    from indexing.services.extraction import extractor_get_or_create
    from indexing.services.importer import collection_import

    redis.Redis.from_url(REDIS_URL).flushdb()
    sources = tmp_path / "sketches" / "png"
    for folder in sorted(DEMO_DATA.glob("png/*"))[:24]:  # 24 classes x 16 = 384 sketches
        shutil.copytree(folder, sources / folder.name)
    collection_import(path=sources.parent, name="faults", kind="sketches", test_per_class=0)
    collection = Collection.objects.get(name="faults")
    extractor = extractor_get_or_create(backbone="mobilenet_v1")
    total = collection.images.count()
    env = {
        **os.environ,
        "DATABASE_URL": _test_database_url(),
        "CELERY_BROKER_URL": REDIS_URL,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
    }

    def start_worker() -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "celery", "-A", "sketchsite", "worker", "--pool", "solo", "-l", "warning"]
        return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)

    worker = start_worker()
    try:
        collection_extract_features_queue(collection_ids=[collection.pk], extractor_id=extractor.pk)
        deadline = time.monotonic() + 120
        while Feature.objects.filter(extractor=extractor).count() < 64 and time.monotonic() < deadline:
            time.sleep(0.2)
        done_at_kill = Feature.objects.filter(extractor=extractor).count()
        os.killpg(worker.pid, signal.SIGKILL)  # the worker dies mid-task, without any cleanup
        worker.wait(timeout=30)
        assert 0 < done_at_kill < total, f"kill should land mid-extraction ({done_at_kill} of {total})"
        # Restart a worker and re-run the extraction: it embeds what is missing, nothing twice.
        worker = start_worker()
        collection_extract_features_queue(collection_ids=[collection.pk], extractor_id=extractor.pk)
        deadline = time.monotonic() + 180
        while Feature.objects.filter(extractor=extractor).count() < total and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)
    features = Feature.objects.filter(extractor=extractor)
    assert features.count() == total
    assert features.values("image").distinct().count() == total


def _test_database_url() -> str:
    params = connection.settings_dict
    return f"postgres://{params['USER']}@{params['HOST']}:{params['PORT']}/{params['NAME']}"
