"""What a hostile client tried (issue 16): path traversal on /media/ and /static/, answered with a plain 404."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import get_commands, load_command_class
from django.test import Client
from pytest_django.fixtures import Settings

from tests.conftest import sketch_png


def wsgi_get(app: Callable[..., Any], path: str) -> tuple[str, bytes]:
    """GET ``path`` through a WSGI application exactly as a server passes it (PATH_INFO already %-decoded)."""
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http",
    }
    statuses: list[str] = []
    try:
        body = b"".join(app(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    except Exception as exc:  # what the development server turns into a 500
        return f"500 {type(exc).__name__}", b""
    return statuses[0], body


def runserver_application() -> Callable[..., Any]:
    """The WSGI application `manage.py runserver` (so `make run`) serves, with the command's default options."""
    command = load_command_class(get_commands()["runserver"], "runserver")
    options = vars(command.create_parser("manage.py", "runserver").parse_args([]))
    return command.get_handler(**options)  # type: ignore[attr-defined,no-any-return]


TRAVERSALS = ["/static/../../etc/passwd", "/static/../../../../../../etc/passwd", "/static/../../settings.py"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", TRAVERSALS)
def test_static_traversal_under_runserver_is_a_404(path: str, settings: Settings) -> None:
    # `curl --path-as-is`, %2e%2e and ..%2f all reach the application as PATH_INFO "/static/../..".
    settings.DEBUG = True  # as under make run
    status, _ = wsgi_get(runserver_application(), path)
    assert status.startswith("404"), status


@pytest.mark.django_db
def test_static_files_are_still_served_under_runserver(settings: Settings) -> None:
    settings.DEBUG = settings.WHITENOISE_USE_FINDERS = settings.WHITENOISE_AUTOREFRESH = True  # make run's DEBUG=true
    status, body = wsgi_get(runserver_application(), "/static/frontend/draw.css")
    assert status.startswith("200"), status
    assert b"--ink" in body


@pytest.mark.django_db
@pytest.mark.parametrize("path", TRAVERSALS)
def test_static_traversal_in_production_is_a_404(path: str, settings: Settings) -> None:
    from sketchsite.wsgi import application

    status, _ = wsgi_get(application, path)
    assert status.startswith("404"), status


@pytest.fixture
def media_files(settings: Settings) -> Path:
    root = Path(settings.MEDIA_ROOT)
    (root / "collections" / "c").mkdir(parents=True)
    (root / "collections" / "c" / "a.png").write_bytes(sketch_png(1))
    (root / "extractors").mkdir()
    (root / "extractors" / "model.weights.h5").write_bytes(b"secret weights")
    (root / "secret.txt").write_bytes(b"secret")
    return root


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/media/collections/../extractors/model.weights.h5",
        "/media/evaluations/../extractors/model.weights.h5",
        "/media/collections/c/../../extractors/model.weights.h5",
        "/media/collections/../secret.txt",
        "/media/collections/../../../../etc/passwd",
        "/media/extractors/model.weights.h5",
        "/media/collections",
        "/media/collections/c",
        "/media/collections/c/\x00a.png",
    ],
)
def test_media_outside_the_served_folders_is_a_bare_404(media_files: Path, path: str) -> None:
    client = Client()
    existing = client.get(path)
    missing = client.get(path.replace("model.weights.h5", "nothing.h5").replace("secret.txt", "nothing.txt"))
    assert existing.status_code == 404
    assert b"secret" not in existing.content
    # The same answer whether or not a file exists there: the 404 tells nothing about MEDIA_ROOT.
    assert existing.content == missing.content == b"not found"


@pytest.mark.django_db
def test_media_in_a_served_folder_is_served_and_a_missing_one_is_a_bare_404(media_files: Path) -> None:
    client = Client()
    assert client.get("/media/collections/c/a.png").status_code == 200
    assert client.get("/media/collections/c/./a.png").status_code == 200
    missing = client.get("/media/collections/c/b.png")
    assert missing.status_code == 404
    assert missing.content == b"not found"
