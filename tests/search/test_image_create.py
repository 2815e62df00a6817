"""POST /api/images/: a staff upload is stored, embedded and searchable in the answer's wake."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from indexing.models import Feature, Image, IndexAddition
from tests.conftest import sketch_png
from tests.factories import make_indexed_collection, use_tiny_backbone

pytestmark = pytest.mark.django_db

IMAGES = "/api/images/"


@pytest.fixture(autouse=True)
def _tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    use_tiny_backbone(monkeypatch)


@pytest.fixture
def staff() -> APIClient:
    client = APIClient()
    client.force_login(User.objects.create_user("curator", password="pw", is_staff=True))
    return client


def _form(data: bytes, **fields: str) -> dict[str, object]:
    return {"file": SimpleUploadedFile("new.png", data, content_type="image/png"), **fields}


def test_a_staff_upload_is_searchable_at_once(staff: APIClient) -> None:
    collection, extractor, index = make_indexed_collection()
    before = APIClient().post("/api/search/", {"image": _form(sketch_png(4242))["file"]}, format="multipart").json()
    response = staff.post(IMAGES, _form(sketch_png(4242), collection=collection.name, label="owl"), format="multipart")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["created"] is True
    assert body["embedded_by"] == [extractor.name]
    assert body["label"] == "owl"
    image = Image.objects.get(pk=body["id"])
    assert Feature.objects.filter(image=image, extractor=extractor).exists()
    assert IndexAddition.objects.filter(index=index, image=image).exists()
    after = APIClient().post("/api/search/", {"image": _form(sketch_png(4242))["file"]}, format="multipart").json()
    assert after["results"][0]["image_id"] == image.pk
    assert image.pk not in [hit["image_id"] for hit in before["results"]]
    again = staff.post(IMAGES, _form(sketch_png(4242), collection=collection.name), format="multipart")
    assert again.status_code == 200
    assert again.json()["id"] == image.pk
    assert again.json()["created"] is False


def test_only_staff_may_upload() -> None:
    collection, _, _ = make_indexed_collection()
    anonymous = APIClient().post(IMAGES, _form(sketch_png(1), collection=collection.name), format="multipart")
    assert anonymous.status_code in (401, 403)
    user = APIClient()
    user.force_login(User.objects.create_user("visitor", password="pw"))
    assert user.post(IMAGES, _form(sketch_png(1), collection=collection.name), format="multipart").status_code == 403
    assert Image.objects.count() == 24


def test_bad_uploads_are_refused_with_a_message(staff: APIClient) -> None:
    collection, _, _ = make_indexed_collection()
    broken = staff.post(IMAGES, _form(b"not an image", collection=collection.name), format="multipart")
    assert broken.status_code == 400
    assert "not an image file" in broken.json()["error"]
    unknown = staff.post(IMAGES, _form(sketch_png(2), collection="nope"), format="multipart")
    assert unknown.status_code == 400
    assert "unknown collection 'nope'" in unknown.json()["error"]
    missing = staff.post(IMAGES, {"collection": collection.name}, format="multipart")
    assert missing.status_code == 400
    assert missing.json()["error"].startswith("file:")
    assert Image.objects.count() == 24


def test_an_image_added_in_the_admin_is_embedded_and_searchable(admin_client: object) -> None:
    from django.test import Client

    assert isinstance(admin_client, Client)
    collection, extractor, index = make_indexed_collection()
    form = {"collection": collection.pk, "label": "owl", "split": "train", "source": "", "original_name": ""}
    broken = admin_client.post(
        "/admin/indexing/image/add/", {**form, "file": SimpleUploadedFile("x.png", b"not an image")}
    )
    assert broken.status_code == 200  # the form again, with the error
    assert "file" in broken.context["adminform"].form.errors
    assert Image.objects.count() == 24
    response = admin_client.post(
        "/admin/indexing/image/add/", {**form, "file": SimpleUploadedFile("owl.png", sketch_png(777))}
    )
    assert response.status_code == 302
    image = Image.objects.get(label="owl")
    assert len(image.sha256) == 64
    assert image.width > 0
    assert Feature.objects.filter(image=image, extractor=extractor).exists()
    assert IndexAddition.objects.filter(index=index, image=image).exists()
    found = APIClient().post("/api/search/", {"image": _form(sketch_png(777))["file"]}, format="multipart").json()
    assert found["results"][0]["image_id"] == image.pk
