from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from indexing.models import LSHIndex
from indexing.services.search import sketch_search
from indexing.stores import OrmBucketStore
from tests.conftest import sketch_png
from tests.search.fakes import LABELS, BuiltIndex

pytestmark = pytest.mark.django_db

SEARCH = "/api/search/"


@pytest.fixture
def client() -> APIClient:
    return APIClient()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def upload(content: bytes, name: str = "sketch.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="image/png")


def assert_json_error(response: Any, status: int) -> str:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str)
    assert body["error"]
    return str(body["error"])


def test_search_by_data_url_returns_the_service_results(client: APIClient, built: BuiltIndex) -> None:
    png = sketch_png(7)
    response = client.post(SEARCH, {"image": data_url(png), "k": 5}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    expected = sketch_search(image=png, top_k=5)
    assert [r["image_id"] for r in body["results"]] == [h.image_id for h in expected.hits]
    assert [r["score"] for r in body["results"]] == pytest.approx([h.score for h in expected.hits])
    first, hit = body["results"][0], expected.hits[0]
    assert first == {
        "image_id": hit.image_id,
        "url": hit.url,
        "label": hit.label,
        "score": pytest.approx(hit.score),
        "collection": "sketches",
        "split": hit.split,
    }
    assert {r["label"] for r in body["results"]} <= set(LABELS)
    stats = body["stats"]
    assert stats["candidates"] == expected.candidates
    assert stats["candidates_with_repeats"] == expected.candidates_with_repeats
    assert stats["collection_size"] == len(built.image_ids)
    assert stats["probes"] == expected.probes  # the index's tuned probes, raised while buckets are nearly empty
    assert stats["scan"] is False
    assert stats["timings_ms"]["total"] >= 0
    assert {"load", "preprocess", "embed", "hash", "sql", "rerank", "fetch"} <= set(stats["timings_ms"])
    assert body["index"] == {
        "id": built.index.pk,
        "name": "default",
        "version": 1,
        "family": "binary",
        "num_tables": 4,
        "hashes_per_table": 4,
        "probes": built.index.probes,
        "extractor": "tiny",
    }


def test_search_by_multipart_file_matches_the_data_url(client: APIClient, built: BuiltIndex) -> None:
    png = sketch_png(8)
    by_file = client.post(SEARCH, {"image": upload(png), "k": "4", "probes": "1"}, format="multipart")
    by_url = client.post(SEARCH, {"image": data_url(png), "k": 4, "probes": 1}, format="json")
    assert by_file.status_code == 200, by_file.content
    assert by_file.json()["results"] == by_url.json()["results"]
    assert by_file.json()["stats"]["probes"] == 1
    assert len(by_file.json()["results"]) <= 4


def test_search_by_image_id_excludes_the_query_image(client: APIClient, built: BuiltIndex) -> None:
    query = built.image_ids[3]
    response = client.post(SEARCH, {"image_id": query, "k": 10, "scan": True}, format="json")
    assert response.status_code == 200, response.content
    ids = [r["image_id"] for r in response.json()["results"]]
    expected = sketch_search(image_id=query, top_k=10, scan=True)
    assert ids == [h.image_id for h in expected.hits]
    assert query not in ids
    assert response.json()["stats"]["candidates"] == len(built.image_ids)  # scan scores everything
    assert response.json()["stats"]["ie"] == pytest.approx(1.0)


def test_search_filters_by_label_and_uses_the_given_index(client: APIClient, built: BuiltIndex) -> None:
    response = client.post(
        SEARCH, {"image": data_url(sketch_png(9)), "label": "house", "scan": True, "index": built.index.pk}
    )
    assert response.status_code == 200, response.content
    labels = {r["label"] for r in response.json()["results"]}
    assert labels == {"house"}
    assert response.json()["index"]["id"] == built.index.pk


def test_search_answers_null_ie_when_no_candidate_is_found(
    client: APIClient, built: BuiltIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every bucket empty: IE is collection_size / 0, infinite, which JSON cannot carry: null.
    monkeypatch.setattr(OrmBucketStore, "lookup", lambda self, keys: np.empty(0, dtype=np.int64))
    response = client.post(SEARCH, {"image": data_url(sketch_png(10))}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["results"] == []
    assert body["stats"]["candidates"] == 0
    assert body["stats"]["ie"] is None
    assert body["stats"]["ie_paper"] is None


def test_search_default_k_is_24(client: APIClient, built: BuiltIndex) -> None:
    response = client.post(SEARCH, {"image_id": built.image_ids[0], "scan": True}, format="json")
    assert len(response.json()["results"]) == min(24, len(built.image_ids) - 1)


def not_png() -> bytes:
    return b"this is plain text, not an image"


def truncated_png() -> bytes:
    png = sketch_png(11)
    return png[: len(png) // 2]


@pytest.mark.parametrize(
    ("payload", "fmt", "fragment"),
    [
        ({}, "json", "exactly one"),
        ({"image": ""}, "json", "empty"),
        ({"image": "data:image/png;base64,"}, "json", "empty"),
        ({"image": "data:image/png,abc"}, "json", "malformed"),
        ({"image": "hello"}, "json", "malformed"),
        ({"image": "data:text/plain;base64,aGVsbG8="}, "json", "not an image"),
        ({"image": "data:image/png;base64,%%%not-base64%%%"}, "json", "base64"),
        ({"image": 12}, "json", "file upload or a data URL"),
        ({"image": "data:image/png;base64," + base64.b64encode(not_png()).decode()}, "json", "not a recognised"),
        ({"image": "data:image/png;base64," + base64.b64encode(truncated_png()).decode()}, "json", "truncated"),
        ({"image_id": 1, "image": "data:image/png;base64,AAAA"}, "json", "exactly one"),
        ({"image_id": 10**9}, "json", "unknown image"),
        ({"image_id": 2**63}, "json", "image_id"),  # past BIGINT (found by the schemathesis fuzz: was a 500)
        ({"image_id": 1, "index": 2**63}, "json", "index"),
        ({"image_id": "abc"}, "json", "image_id"),
        ({"image_id": 1, "k": 0}, "json", "k"),
        ({"image_id": 1, "k": 501}, "json", "k"),
        ({"image_id": 1, "probes": -1}, "json", "probes"),
        ({"image_id": 1, "probes": 17}, "json", "probes"),
        ({"image_id": 1, "index": 999999}, "json", "unknown index"),
    ],
)
def test_search_bad_input_is_a_json_400(
    client: APIClient, built: BuiltIndex, payload: dict[str, Any], fmt: str, fragment: str
) -> None:
    if payload.get("image_id") == 1:
        payload = {**payload, "image_id": built.image_ids[0]}
    message = assert_json_error(client.post(SEARCH, payload, format=fmt), 400)
    assert fragment.lower() in message.lower()


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(b"", "empty"), (not_png(), "not a recognised"), (truncated_png(), "truncated")],
    ids=["zero-bytes", "not-an-image", "truncated-png"],
)
def test_search_bad_file_is_a_json_400(client: APIClient, built: BuiltIndex, content: bytes, fragment: str) -> None:
    message = assert_json_error(client.post(SEARCH, {"image": upload(content)}, format="multipart"), 400)
    assert fragment in message.lower()


def test_search_empty_body_and_broken_json_are_json_400(client: APIClient, built: BuiltIndex) -> None:
    assert_json_error(client.post(SEARCH), 400)
    assert_json_error(client.generic("POST", SEARCH, "{not json", content_type="application/json"), 400)
    assert_json_error(client.generic("POST", SEARCH, "x", content_type="application/xml"), 415)


def test_search_too_large_upload_is_a_json_413(client: APIClient, built: BuiltIndex) -> None:
    big = io.BytesIO(b"\x89PNG" + b"\0" * (5 * 1024 * 1024 + 1))
    message = assert_json_error(client.post(SEARCH, {"image": upload(big.getvalue())}, format="multipart"), 413)
    assert "too large" in message


MB = 1024 * 1024


@pytest.mark.parametrize("size_mb", [5.01, 6, 7, 8, 12, 20])
def test_search_upload_over_the_limit_is_a_413_naming_the_limit_whatever_its_size(
    client: APIClient, built: BuiltIndex, size_mb: float
) -> None:
    # Over about 7.5 MB the in-memory upload handler used to drop the file: a 400 "give exactly one of ...".
    content = b"\x89PNG" + b"\0" * int(size_mb * MB)
    message = assert_json_error(client.post(SEARCH, {"image": upload(content), "k": "5"}, format="multipart"), 413)
    assert "too large" in message
    assert "the limit is 5242880 bytes (5.0 MB)" in message


@pytest.mark.parametrize("size_mb", [5.01, 6, 8, 20])
def test_search_data_url_over_the_limit_is_a_413_naming_the_limit_whatever_its_size(
    client: APIClient, built: BuiltIndex, size_mb: float
) -> None:
    body = json.dumps({"image": data_url(b"\x89PNG" + b"\0" * int(size_mb * MB))})
    message = assert_json_error(client.generic("POST", SEARCH, body, content_type="application/json"), 413)
    assert "too large" in message
    assert "the limit is 5242880 bytes (5.0 MB)" in message


def test_search_upload_at_the_limit_reaches_the_decoder(client: APIClient, built: BuiltIndex) -> None:
    content = b"\x89PNG" + b"\0" * (5 * MB - 4)  # exactly the limit: accepted, then refused as a broken PNG
    message = assert_json_error(client.post(SEARCH, {"image": upload(content)}, format="multipart"), 400)
    assert "image" in message


def test_search_too_large_data_url_is_a_json_413(client: APIClient, built: BuiltIndex, settings: Settings) -> None:
    settings.SKETCHSEARCH_QUERY_MAX_BYTES = 100
    message = assert_json_error(client.post(SEARCH, {"image": data_url(sketch_png(1))}, format="json"), 413)
    assert "too large" in message


def test_search_body_over_django_limit_is_a_json_413(client: APIClient, built: BuiltIndex, settings: Settings) -> None:
    png = sketch_png(1, size=256, strokes=40)
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = len(png)  # the base64 body is a third larger
    message = assert_json_error(client.post(SEARCH, {"image": data_url(png)}, format="json"), 413)
    assert "too large" in message


def test_search_without_an_active_index_is_a_json_503(client: APIClient, built: BuiltIndex) -> None:
    LSHIndex.objects.update(is_active=False)
    message = assert_json_error(client.post(SEARCH, {"image": data_url(sketch_png(1))}, format="json"), 503)
    assert "no active index" in message


def test_search_is_public_and_csrf_is_enforced_only_for_a_session(built: BuiltIndex, django_user_model: Any) -> None:
    anonymous = APIClient(enforce_csrf_checks=True)
    assert anonymous.post(SEARCH, {"image_id": built.image_ids[0]}, format="json").status_code == 200
    user = django_user_model.objects.create_user(username="u", password="p")
    logged_in = APIClient(enforce_csrf_checks=True)
    logged_in.force_login(user)
    assert_json_error(logged_in.post(SEARCH, {"image_id": built.image_ids[0]}, format="json"), 403)


def test_search_get_is_a_json_405(client: APIClient, built: BuiltIndex) -> None:
    assert_json_error(client.get(SEARCH), 405)


def test_index_list(client: APIClient, built: BuiltIndex) -> None:
    response = client.get("/api/indexes/")
    assert response.status_code == 200
    assert response.json() == [
        {
            "id": built.index.pk,
            "name": "default",
            "version": 1,
            "family": "binary",
            "num_tables": 4,
            "hashes_per_table": 4,
            "probes": built.index.probes,
            "extractor": "tiny",
            "w": 4.0,
            "status": "ready",
            "is_active": True,
            "is_default": True,
            "item_count": len(built.image_ids),
            "images_now": len(built.image_ids),
            "needs_rebuild": False,
            "collections": ["sketches"],
        }
    ]


def test_collection_list(client: APIClient, built: BuiltIndex) -> None:
    response = client.get("/api/collections/")
    assert response.status_code == 200
    assert response.json() == [
        {
            "id": built.collection.pk,
            "name": "sketches",
            "kind": "sketches",
            "image_count": len(built.image_ids),
            "class_count": len(LABELS),
        }
    ]


def test_image_detail(client: APIClient, built: BuiltIndex) -> None:
    image_id = built.image_ids[0]
    response = client.get(f"/api/images/{image_id}/")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == image_id
    assert body["label"] == "cat"
    assert body["split"] == "test"
    assert body["collection"] == "sketches"
    assert body["url"].startswith("/media/collections/sketches/")
    assert set(body) == {"id", "url", "label", "split", "collection", "width", "height", "source"}


def test_image_detail_unknown_is_a_json_404(client: APIClient, built: BuiltIndex) -> None:
    message = assert_json_error(client.get("/api/images/999999/"), 404)
    assert "unknown image 999999" in message


def test_openapi_schema_documents_the_search(client: APIClient) -> None:
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    for route in ("/api/search/", "/api/indexes/", "/api/collections/", "/api/images/{image_id}/"):
        assert route in schema["paths"]
    search = schema["paths"]["/api/search/"]["post"]
    assert {"application/json", "multipart/form-data"} <= set(search["requestBody"]["content"])
    assert {"200", "400", "413"} <= set(search["responses"])


def test_openapi_schema_has_no_warnings(tmp_path: Path) -> None:
    # Fails on any drf-spectacular warning, e.g. two serializers sharing a component name.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))


def test_search_without_a_classifier_answers_no_predictions(client: APIClient, built: BuiltIndex) -> None:
    response = client.post(SEARCH, {"image": data_url(sketch_png(3))}, format="json")
    assert response.status_code == 200
    assert response.json()["predictions"] == []


def test_search_domain_filters_hits_by_collection_kind(client: APIClient, built: BuiltIndex) -> None:
    # The fixture's collection holds sketches: "sketch" and "both" find them, "photo" finds nothing.
    for domain, expect_hits in (("sketch", True), ("both", True), ("photo", False)):
        response = client.post(SEARCH, {"image": data_url(sketch_png(9)), "domain": domain, "scan": True})
        assert response.status_code == 200, response.content
        assert bool(response.json()["results"]) is expect_hits, domain
    response = client.post(SEARCH, {"image": data_url(sketch_png(9)), "domain": "video"})
    assert response.status_code == 400


def test_search_without_a_default_index_uses_the_newest_active_one(client: APIClient, built: BuiltIndex) -> None:
    LSHIndex.objects.filter(pk=built.index.pk).update(name="sketchy")  # active, but not named "default"
    response = client.post(SEARCH, {"image_id": built.image_ids[0]}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["index"]["id"] == built.index.pk
    listed = client.get("/api/indexes/").json()
    assert [index["id"] for index in listed if index["is_default"]] == [built.index.pk]
    LSHIndex.objects.update(is_active=False)
    assert not [index for index in client.get("/api/indexes/").json() if index["is_default"]]


def test_api_docs_load_swagger_ui_from_this_server(client: APIClient) -> None:
    # Offline (no CDN reachable), /api/docs/ must still work: every script and stylesheet is a local static file.
    from django.contrib.staticfiles import finders

    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "@latest" not in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(asset.endswith("swagger-ui-bundle.js") for asset in assets), assets
    for asset in assets:
        assert asset.startswith("/static/"), asset  # never another host (cdn.jsdelivr.net, unpkg.com, ...)
        assert finders.find(asset.removeprefix("/static/")), asset
