from __future__ import annotations

import threading
from collections.abc import Generator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexing.features.backbones import l2_normalize, load_backbone
from indexing.features.pipeline import embed_images, prepare_image
from indexing.features.preprocess import load_image, preprocess_sketch
from tests.features.helpers import canvas_drawing, png_bytes


class FakeBackbone:
    """Mean of each channel per quadrant: cheap, deterministic, records the batch sizes it saw."""

    name = "fake"
    input_size = 16
    dim = 12
    param_count = 0
    weights = "none"

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.threads: set[str] = set()

    def embed(self, images: np.ndarray) -> np.ndarray:
        self.batches.append(len(images))
        self.threads.add(threading.current_thread().name)
        quads = images.reshape(len(images), 2, 8, 2, 8, 3).mean(axis=(2, 4)).reshape(len(images), -1)
        return l2_normalize(quads + 1.0)


def _sources(count: int) -> list[tuple[int, bytes]]:
    return [(i, png_bytes(canvas_drawing(box=(10 + i, 20, 90, 60 + i)))) for i in range(count)]


def test_embeds_every_image_in_order_in_batches() -> None:
    backbone = FakeBackbone()
    results = list(embed_images(_sources(10), backbone, batch_size=4))
    assert [len(ids) for ids, _, _ in results] == [4, 4, 2]
    ids = np.concatenate([r[0] for r in results])
    vectors = np.concatenate([r[1] for r in results])
    np.testing.assert_array_equal(ids, np.arange(10))
    assert ids.dtype == np.int64
    assert vectors.shape == (10, 12)
    assert all(not errors for _, _, errors in results)
    assert backbone.threads == {threading.current_thread().name}  # the model runs in the caller's thread


def test_vectors_match_single_image_path() -> None:
    backbone = FakeBackbone()
    sources = _sources(3)
    _, vectors, _ = next(embed_images(sources, backbone, batch_size=8))
    single = backbone.embed(prepare_image(sources[1][1], 16)[None])
    np.testing.assert_array_equal(vectors[1], single[0])


def test_undecodable_images_are_skipped_and_reported(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(png_bytes(canvas_drawing()))
    sources: list[tuple[int, bytes | str | Path]] = [
        (1, good),
        (2, b"not an image"),
        (3, tmp_path / "missing.png"),
        (4, str(good)),
        (5, b""),
    ]
    ((ids, vectors, errors),) = list(embed_images(sources, FakeBackbone(), batch_size=10))
    np.testing.assert_array_equal(ids, [1, 4])
    assert vectors.shape == (2, 12)
    assert [image_id for image_id, _ in errors] == [2, 3, 5]
    assert "not a recognised image" in errors[0][1]
    assert "missing.png" in errors[1][1]
    assert "0 bytes" in errors[2][1]


def test_batch_where_everything_fails_yields_empty_arrays() -> None:
    ((ids, vectors, errors),) = list(embed_images([(7, b"junk")], FakeBackbone()))
    assert ids.shape == (0,)
    assert vectors.shape == (0, 12)
    assert errors[0][0] == 7


def test_no_input_yields_nothing() -> None:
    assert list(embed_images([], FakeBackbone())) == []


def test_photo_kind_uses_centre_crop() -> None:
    img = Image.new("RGB", (48, 16), (255, 0, 0))
    img.paste((0, 0, 255), (16, 0, 32, 16))
    ((_, vectors, _),) = list(embed_images([(1, png_bytes(img))], FakeBackbone(), kind="photo"))
    expected = FakeBackbone().embed(np.full((1, 16, 16, 3), (0, 0, 255), dtype=np.uint8))
    np.testing.assert_allclose(vectors, expected, atol=1e-2)


@pytest.mark.parametrize(("kwargs", "message"), [({"kind": "video"}, "'video'"), ({"batch_size": 0}, "got 0")])
def test_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        list(embed_images(_sources(1), FakeBackbone(), **kwargs))  # type: ignore[arg-type]


def test_prepare_image_matches_the_preprocessing_defaults() -> None:
    # The bulk path (prepare_image/embed_images) and a direct preprocess_sketch call must agree,
    # otherwise query vectors and indexed vectors drift apart.
    data = png_bytes(canvas_drawing())
    np.testing.assert_array_equal(prepare_image(data, 48), preprocess_sketch(load_image(data), 48))


def test_prepare_image_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="'video'"):
        prepare_image(png_bytes(canvas_drawing()), 16, kind="video")  # type: ignore[arg-type]


def test_consumer_may_stop_early() -> None:
    stream = embed_images(_sources(20), FakeBackbone(), batch_size=2)
    assert isinstance(stream, Generator)
    first = next(stream)
    stream.close()  # shuts the decoding pool down without hanging
    assert len(first[0]) == 2


def test_real_backbone_end_to_end(tu_berlin: Path) -> None:
    paths = sorted((tu_berlin / "ant").glob("*.png"))[:3]
    backbone = load_backbone("mobilenet_v1")
    results = list(embed_images(enumerate(paths), backbone, batch_size=2))
    vectors = np.concatenate([r[1] for r in results])
    assert vectors.shape == (3, 1024)
    expected = backbone.embed(np.stack([prepare_image(p, 224) for p in paths]))
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
