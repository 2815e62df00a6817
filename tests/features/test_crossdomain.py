"""Cross-domain helpers: the photo -> edge map transform and the joint sketch/photo head (no Django)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from indexing.features.crossdomain import (
    build_joint_head,
    fit_joint_head,
    joint_embed,
    photo_to_edges,
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
