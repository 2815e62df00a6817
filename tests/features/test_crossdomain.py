"""Cross-domain helpers: the photo -> edge map transform and the joint sketch/photo head (no Django)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexing.features.crossdomain import (
    JointBackbone,
    build_joint_head,
    fit_joint_head,
    joint_embed,
    load_joint_head,
    photo_to_edges,
    save_joint_head,
    triplet_batches,
)
from indexing.features.pipeline import prepare_image
from tests.features.helpers import png_bytes


def synthetic_photo(size: int = 96) -> Image.Image:
    """A colour photo: a dark-red filled square on a light-blue background, with mild noise."""
    rng = np.random.default_rng(0)
    pixels = np.empty((size, size, 3), dtype=np.float32)
    pixels[:] = (170, 200, 235)
    pixels[24:72, 24:72] = (120, 20, 20)
    pixels += rng.normal(0, 3, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")


def test_edges_of_a_synthetic_photo_are_thin_dark_lines_on_white() -> None:
    edges = photo_to_edges(synthetic_photo(), side=96)
    assert edges.mode == "L"
    assert edges.size == (96, 96)
    pixels = np.asarray(edges)
    assert set(np.unique(pixels)) <= {0, 255}
    ink = pixels == 0
    assert 0.01 < ink.mean() < 0.15  # a thin outline, mostly white
    # The ink sits on the square's border (within the blur's reach), not inside it or in the background.
    ys, xs = np.nonzero(ink)
    near_border = (np.minimum(np.abs(ys - 24), np.abs(ys - 71)) <= 4) | (
        np.minimum(np.abs(xs - 24), np.abs(xs - 71)) <= 4
    )
    inside_box = (ys >= 18) & (ys <= 77) & (xs >= 18) & (xs <= 77)
    assert (near_border & inside_box).mean() > 0.95
    assert not ink[40:56, 40:56].any()  # the square's flat interior has no edges
    assert not ink[:10, :10].any()  # nor the flat background


def test_flat_photo_gives_an_all_white_edge_map() -> None:
    edges = photo_to_edges(Image.new("RGB", (50, 30), (90, 90, 90)))
    assert edges.size == (192, 115)
    assert np.asarray(edges).min() == 255


def test_edges_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="high_quantile"):
        photo_to_edges(synthetic_photo(), high_quantile=1.0)
    with pytest.raises(ValueError, match="side"):
        photo_to_edges(synthetic_photo(), side=4)


def test_prepare_image_edges_kind_is_a_sketch_of_the_photo() -> None:
    data = png_bytes(synthetic_photo())
    out = prepare_image(data, 64, kind="edges")
    assert out.shape == (64, 64, 3)
    assert out.dtype == np.uint8
    assert out.min() == 0
    assert np.median(out) == 255
    photo = prepare_image(data, 64, kind="photo")
    assert not np.array_equal(out, photo)
    with pytest.raises(ValueError, match="'edges'"):
        prepare_image(data, 64, kind="drawing")  # type: ignore[arg-type]


def test_triplet_batches_pair_each_sketch_with_its_photo() -> None:
    photo_labels = np.repeat(np.arange(6), 4)
    sketch_photo = np.arange(24)
    batches = triplet_batches(photo_labels, sketch_photo, batch_classes=3, per_class=2, seed=1)
    assert batches
    for sketches, photos in batches:
        assert np.array_equal(photos, sketch_photo[sketches])
        counts = np.bincount(photo_labels[photos])
        assert set(counts[counts > 0]) == {2}


def test_joint_head_learns_separable_sketch_photo_pairs() -> None:
    rng = np.random.default_rng(0)
    classes, per_class, dim = 4, 8, 24
    centres = rng.standard_normal((classes, dim)) * 3
    photo_labels = np.repeat(np.arange(classes), per_class)
    photo_feats = centres[photo_labels] + rng.standard_normal((len(photo_labels), dim)) * 0.5
    # Sketches live in another "domain": a fixed random linear map of their photo, plus noise.
    mixing = rng.standard_normal((dim, dim))
    sketch_photo = np.arange(len(photo_labels))
    sketch_feats = photo_feats @ mixing + rng.standard_normal(photo_feats.shape) * 0.5
    sketch_branch, photo_branch = build_joint_head(dim, hidden=32, dim=8, seed=0)
    fit = fit_joint_head(
        sketch_branch,
        photo_branch,
        sketch_feats.astype(np.float32),
        photo_feats.astype(np.float32),
        photo_labels,
        sketch_photo,
        epochs=60,
        batch_classes=4,
        per_class=4,
        learning_rate=3e-3,
    )
    assert fit.epochs == 60
    assert fit.losses[-1] < fit.losses[0]
    a = joint_embed(sketch_branch, sketch_feats)
    p = joint_embed(photo_branch, photo_feats)
    assert a.shape == (32, 8)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    nearest = np.argmax(a @ p.T, axis=1)
    assert (photo_labels[nearest] == photo_labels).mean() >= 0.9


def test_shared_head_is_one_model() -> None:
    sketch_branch, photo_branch = build_joint_head(8, hidden=4, dim=2, shared=True)
    assert sketch_branch is photo_branch


class _Base:
    """A stand-in base backbone: the first ``dim`` pixels of the image, scaled."""

    name, input_size, dim, param_count, weights = "base", 4, 8, 0, "none"

    def embed(self, images: np.ndarray) -> np.ndarray:
        flat = images.reshape(len(images), -1)[:, : self.dim].astype(np.float32) / 255.0
        return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-9)


def test_joint_head_round_trips_through_one_file_and_serves_each_side(tmp_path: Path) -> None:
    sketch_branch, photo_branch = build_joint_head(8, hidden=6, dim=3, seed=1)
    path = str(tmp_path / "joint.keras")
    save_joint_head(path, sketch_branch, photo_branch)
    loaded_sketch, loaded_photo = load_joint_head(path)
    images = np.random.default_rng(0).integers(1, 255, (5, 4, 4, 3), dtype=np.uint8)
    base = _Base()
    joint = JointBackbone(base, loaded_sketch, loaded_photo, name="j", photo_input="edges")
    assert (joint.dim, joint.input_size, joint.photo_input) == (3, 4, "edges")
    features = base.embed(images)
    np.testing.assert_allclose(joint.embed(images), joint_embed(sketch_branch, features), atol=1e-5)
    photo_side = joint.for_kind("edges")
    np.testing.assert_allclose(photo_side.embed(images), joint_embed(photo_branch, features), atol=1e-5)
    assert photo_side.dim == 3
    assert joint.for_kind("sketch") is joint
    assert not np.allclose(joint.embed(images), photo_side.embed(images))
    with pytest.raises(ValueError, match="kind"):
        joint.for_kind("drawing")


def test_shared_joint_head_loads_as_one_model_and_bad_inputs_are_refused(tmp_path: Path) -> None:
    shared, _ = build_joint_head(8, hidden=4, dim=2, shared=True)
    path = str(tmp_path / "shared.keras")
    save_joint_head(path, shared, shared)
    sketch_branch, photo_branch = load_joint_head(path)
    assert sketch_branch is photo_branch
    with pytest.raises(ValueError, match="photo_input"):
        JointBackbone(_Base(), sketch_branch, photo_branch, name="j", photo_input="pixels")
    wide, _ = build_joint_head(16, hidden=4, dim=2, shared=True)
    with pytest.raises(ValueError, match="16-d"):
        JointBackbone(_Base(), wide, wide, name="j")
    import keras

    plain = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    plain.save(str(tmp_path / "plain.keras"))
    with pytest.raises(ValueError, match="no joint"):
        load_joint_head(str(tmp_path / "plain.keras"))
