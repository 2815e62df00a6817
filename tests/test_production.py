from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import OperationalError
from django.test import Client
from PIL import Image
from pytest_django.fixtures import Settings

from tests.conftest import sketch_png
from tests.factories import make_indexed_collection, use_tiny_backbone

ROOT = Path(__file__).resolve().parents[1]


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "ALLOWED_HOSTS", "DEBUG"}}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def test_production_settings_refuse_to_start_without_secret_key_or_hosts() -> None:
    missing_key = _manage("check", DEBUG="false", ALLOWED_HOSTS="example.org")
    assert missing_key.returncode != 0
    assert "SECRET_KEY must be set" in missing_key.stderr
    missing_hosts = _manage("check", DEBUG="false", SECRET_KEY="x" * 50)
    assert missing_hosts.returncode != 0
    assert "ALLOWED_HOSTS must be set" in missing_hosts.stderr


def test_deployment_checks_pass_in_production_mode() -> None:
    result = _manage(
        "check", "--deploy", "--fail-level", "WARNING",
        DEBUG="false", SECRET_KEY="k" * 30 + "-Zq8!" + "x" * 30, ALLOWED_HOSTS="sketchsearch.example.org",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.django_db
def test_healthz_is_503_without_an_index_and_200_when_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    client = Client()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["database"] == "ok"
    use_tiny_backbone(monkeypatch)
    from indexing.services import backbones

    make_indexed_collection()
    monkeypatch.setattr(backbones, "_loaded", set())  # as in a fresh web process: nothing loaded yet
    assert client.get("/healthz").json()["model"] == "not loaded"
    sketch = "data:image/png;base64," + base64.b64encode(sketch_png(5)).decode()
    assert client.post("/api/search/", {"image": sketch}, content_type="application/json").status_code == 200
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["index"].startswith("default v1")


@pytest.mark.django_db
def test_stored_images_are_served_with_a_safe_content_type(settings: Settings) -> None:
    folder = Path(settings.MEDIA_ROOT) / "collections" / "c"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(sketch_png(1))
    (folder / "evil.svg").write_text("<svg onload='alert(1)'/>")
    client = Client()
    png = client.get("/media/collections/c/a.png")
    assert png.status_code == 200
    assert png["Content-Type"] == "image/png"
    assert png["X-Content-Type-Options"] == "nosniff"
    svg = client.get("/media/collections/c/evil.svg")
    assert svg["Content-Type"] == "application/octet-stream"
    assert svg["Content-Disposition"] == "attachment"
    assert client.get("/media/collections/../../etc/passwd").status_code in (400, 404)
    assert client.get("/media/extractors/weights.h5").status_code == 404


@pytest.mark.django_db
def test_a_database_outage_during_a_search_is_a_503_with_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import search.apis

    def down(**_: object) -> None:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(search.apis, "index_get_default", down)
    response = Client().post("/api/search/", {"image_id": 1}, content_type="application/json")
    assert response.status_code == 503
    assert "database is unavailable" in response.json()["error"]


def test_compose_file_defines_the_services_with_healthchecks_and_volumes() -> None:
    compose = yaml.safe_load((ROOT / "docker" / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {"db", "redis", "web", "worker"}
    assert "healthz" in " ".join(compose["services"]["web"]["healthcheck"]["test"])
    assert compose["services"]["worker"]["command"][:3] == ["celery", "-A", "sketchsite"]
    web = compose["services"]["web"]["command"][-1]
    assert web.index("migrate") < web.index("write_vectors") < web.index("gunicorn")  # no first search writes them
    assert {"db-data", "media"} <= set(compose["volumes"])
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "USER sketch" in dockerfile
    assert "FROM python:3.11.7-slim" in dockerfile  # pinned


@pytest.mark.django_db
def test_an_uploaded_query_image_is_never_written_to_disk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings: Settings
) -> None:
    use_tiny_backbone(monkeypatch)
    make_indexed_collection()
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(uploads)
    written: list[str] = []
    from django.core.files import temp

    original = temp.NamedTemporaryFile

    def spy(*args: object, **kwargs: object) -> object:
        written.append(str(kwargs.get("suffix") or args))  # Django spills big uploads through this
        return original(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(temp, "NamedTemporaryFile", spy)
    big = io.BytesIO()
    # A valid 4 MB PNG (noise does not compress): over Django's 2.5 MB default spill threshold.
    noise = np.random.default_rng(0).integers(0, 256, (1200, 1200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(big, format="PNG")
    assert 2.5e6 < big.tell() < 5 * 1024 * 1024
    upload = SimpleUploadedFile("big.png", big.getvalue(), content_type="image/png")
    response = Client().post("/api/search/", {"image": upload})
    assert response.status_code == 200, response.content
    assert written == []
    assert list(uploads.iterdir()) == []


def test_errors_show_no_stack_trace_with_debug_off(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    import search.apis

    settings.DEBUG = False
    settings.ALLOWED_HOSTS = ["testserver"]

    def boom(**_: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(search.apis, "index_get_default", boom)
    client = Client(raise_request_exception=False)
    response = client.post("/api/search/", {"image_id": 1}, content_type="application/json")
    assert response.status_code == 500
    assert b"secret internal detail" not in response.content
    assert b"Traceback" not in response.content
