"""Training views of sketches: how people draw them on the page (stroke width, pose, mirror, unfinished drawings).

Two sources: raster sketches (TU-Berlin PNGs) and stroke lists (Quick, Draw!). A view is a PIL image that then
goes through the same :func:`~indexing.features.preprocess.preprocess_sketch` as every indexed image and every
query, so cropping to the strokes already makes the features blind to where and how large a drawing is; what a
view changes is what that crop cannot undo: stroke width, rotation, mirror, aspect, and (for stroke lists)
how much of the drawing is there yet. Pure: Pillow and NumPy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from indexing.features.quickdraw import Stroke, cut_strokes, render_strokes, transform_strokes

__all__ = ["PAGE_CANVAS", "PAGE_PEN_WIDTH", "AugmentSpec", "drawing_view", "page_render", "raster_view"]

# The drawing page's canvas side and default pen width (frontend/templates/frontend/draw.html): a drawing replayed
# there is what a query looks like.
PAGE_CANVAS = 512
PAGE_PEN_WIDTH = 6.0


@dataclass(frozen=True)
class AugmentSpec:
    """The random changes of one training view.

    Attributes:
        max_angle: Rotation drawn uniformly in [-max_angle, max_angle] degrees.
        flip: Probability of a horizontal mirror.
        stretch: Horizontal scale drawn in [1 - stretch, 1 + stretch] (stroke lists only).
        widths: Pen width range in pixels of a 256-pixel drawing (the data set's box); doubled on the page canvas.
        cuts: Fractions of the strokes a view keeps, drawn uniformly from this tuple (stroke lists only).
        raster_thickening: Minimum-filter sizes drawn for raster sketches (1 = unchanged).
    """

    max_angle: float = 15.0
    flip: float = 0.5
    stretch: float = 0.15
    widths: tuple[float, float] = (1.0, 8.0)
    cuts: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)
    raster_thickening: tuple[int, ...] = (1, 1, 3, 5)


def page_render(strokes: Sequence[Stroke], *, width: float = PAGE_PEN_WIDTH) -> Image.Image:
    """A stroke list drawn as the page draws it: its 512-pixel canvas and pen.

    Args:
        strokes: The strokes, any coordinate range (fitted to the canvas).
        width: Pen width in canvas pixels (the page's default is 6).

    Returns:
        A mode ``"L"`` image.
    """
    return render_strokes(strokes, size=PAGE_CANVAS, width=width)


def drawing_view(strokes: Sequence[Stroke], rng: np.random.Generator, spec: AugmentSpec = AugmentSpec()) -> Image.Image:
    """One random training view of a stroke list.

    Args:
        strokes: The drawing's strokes in drawing order.
        rng: Random source.
        spec: What may change.

    Returns:
        A mode ``"L"`` image on the page's canvas.
    """
    cut = float(rng.choice(spec.cuts))
    moved = transform_strokes(
        strokes,
        angle=float(rng.uniform(-spec.max_angle, spec.max_angle)),
        flip=bool(rng.random() < spec.flip),
        stretch=float(rng.uniform(1 - spec.stretch, 1 + spec.stretch)),
    )
    width = float(rng.uniform(*spec.widths)) * PAGE_CANVAS / 256
    return page_render(cut_strokes(moved, cut), width=width)


def raster_view(image: Image.Image, rng: np.random.Generator, spec: AugmentSpec = AugmentSpec()) -> Image.Image:
    """One random training view of a raster sketch (dark strokes on white).

    Args:
        image: The sketch, any mode.
        rng: Random source.
        spec: What may change.

    Returns:
        A mode ``"L"`` image.
    """
    gray = image.convert("L")
    if rng.random() < spec.flip:
        gray = ImageOps.mirror(gray)
    angle = float(rng.uniform(-spec.max_angle, spec.max_angle))
    gray = gray.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=255)
    size = int(rng.choice(spec.raster_thickening))
    if size > 1:
        gray = gray.filter(ImageFilter.MinFilter(size))
    return gray
