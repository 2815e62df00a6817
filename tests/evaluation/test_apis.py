from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from evaluation.models import EvaluationRun
from evaluation.runs import class_analysis, evaluation_run, lsh_sweep
from indexing.models import Job
from tests.evaluation.conftest import Dataset

pytestmark = pytest.mark.django_db

LIST = "/api/evaluations/"


@pytest.fixture
def runs(dataset: Dataset) -> list[EvaluationRun]:
    common: dict[str, Any] = {"extractor": dataset.extractor, "collections": [dataset.sketches]}
    return [
        evaluation_run(**common),
        lsh_sweep(**common, family=["binary", "real"], grid=[(2, 3)], w=1.0),
        class_analysis(**common),
    ]


@pytest.fixture
def staff() -> User:
    return User.objects.create_user("admin", password="pw", is_staff=True)


def test_list_and_detail_are_public(runs: list[EvaluationRun]) -> None:
    client = APIClient()
    listing = client.get(LIST).json()
    assert [row["id"] for row in listing] == [run.pk for run in reversed(runs)]
    assert listing[-1]["headline_map"] == pytest.approx(runs[0].results["mAP"])
    detail = client.get(f"{LIST}{runs[1].pk}/").json()
    assert detail["kind"] == "sweep"
    assert len(detail["results"]["rows"]) == 2
    assert detail["figures"][0].endswith("sweep.png")
    missing = client.get(f"{LIST}999999/")
    assert missing.status_code == 404
    assert "999999" in missing.json()["error"]


def body(**extra: Any) -> dict[str, Any]:
    return {"kind": "evaluate", "extractor": "tiny", "collections": ["sketches"], **extra}


def test_post_is_refused_to_anonymous_and_plain_users(dataset: Dataset) -> None:
    client = APIClient()
    anonymous = client.post(LIST, body(), format="json")
    assert anonymous.status_code == 401  # not authenticated: 401 with the scheme to use
    assert anonymous["WWW-Authenticate"] == 'Basic realm="api"'
    user = User.objects.create_user("user", password="pw")
    client.force_login(user)
    assert client.post(LIST, body(), format="json").status_code == 403  # authenticated, not allowed
    assert not Job.objects.exists()


def test_staff_post_queues_a_run(
    dataset: Dataset, staff: User, django_capture_on_commit_callbacks: Callable[..., Any], eager_celery: None
) -> None:
    client = APIClient()
    client.force_authenticate(staff)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            LIST, body(kind="sweep", grid="2x3", families=["binary"], probe_list=[0, 1]), format="json"
        )
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["job"])
    run = EvaluationRun.objects.get()
    assert job.kind == Job.Kind.EVALUATE
    assert job.status == Job.Status.DONE  # eager mode ran it
    assert job.message == f"evaluation run #{run.pk}"
    assert run.kind == "sweep"
    assert [row["probes"] for row in run.results["rows"]] == [0, 1]


def test_staff_post_with_a_bad_name_is_a_400(dataset: Dataset, staff: User) -> None:
    client = APIClient()
    client.force_authenticate(staff)
    response = client.post(LIST, body(collections=["nowhere"]), format="json")
    assert response.status_code == 400
    assert "nowhere" in response.json()["error"]
    response = client.post(LIST, body(kind="sweep", grid="3y6"), format="json")
    assert response.status_code == 400
    response = client.post(LIST, body(index=2**63), format="json")  # past BIGINT: a 400, not a 500
    assert response.status_code == 400
    assert "index" in response.json()["error"]
    assert not Job.objects.exists()


def test_dashboard_pages_render(runs: list[EvaluationRun]) -> None:
    client = Client()
    page = client.get("/evaluation/")
    assert page.status_code == 200
    assert b"Queue a run" not in page.content  # the form is for staff only
    for run in runs:
        detail = client.get(f"/evaluation/{run.pk}/")
        assert detail.status_code == 200
        if run.figures:  # sweeps and class analyses have plots; a plain evaluation has none
            assert f"evaluations/{run.pk}/".encode() in detail.content
    analysis = client.get(f"/evaluation/{runs[2].pk}/").content.decode()
    best = runs[2].per_class[0]["best query id"]
    assert f"best query #{best}" in analysis
    assert client.get("/evaluation/999999/").status_code == 404


def test_dashboard_form_is_staff_only(
    dataset: Dataset, staff: User, django_capture_on_commit_callbacks: Callable[..., Any], eager_celery: None
) -> None:
    client = Client()
    assert client.post("/evaluation/", {"kind": "evaluate"}).status_code == 403
    client.force_login(staff)
    assert b"Queue a run" in client.get("/evaluation/").content
    form = {"kind": "evaluate", "extractor": "tiny", "collections": ["sketches"], "queries": "paper", "probes": "0"}
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/evaluation/", form)
    assert response.status_code == 302
    assert EvaluationRun.objects.get().parameters["queries"] == "paper"


def test_admin_shows_runs(runs: list[EvaluationRun]) -> None:
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="pw"))
    assert client.get("/admin/evaluation/evaluationrun/").status_code == 200
    for run in runs:
        assert client.get(f"/admin/evaluation/evaluationrun/{run.pk}/change/").status_code == 200
