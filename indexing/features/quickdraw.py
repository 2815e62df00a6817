"""Quick, Draw! drawings: read the data set's ``simplified`` ndjson, render stroke lists, cut unfinished drawings.

A Quick, Draw! drawing is what the drawing page receives: strokes in the order they were drawn, made quickly in a
browser. Each ndjson line holds ``{"word", "key_id", "drawing": [[xs, ys], ...], ...}`` with coordinates in a
256 x 256 box. :func:`render_strokes` draws a stroke list the way the page's canvas does (round caps and joins,
a one-point stroke is a dot), and :func:`cut_strokes` keeps the first fraction of the strokes, which is what live
search sends while someone is still drawing. Pure: Pillow and NumPy only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "QUICKDRAW_BOX",
    "Drawing",
    "cut_strokes",
    "read_drawings",
    "read_folder",
    "render_strokes",
    "transform_strokes",
]

QUICKDRAW_BOX = 256  # the simplified data set's coordinate box

Stroke = tuple[np.ndarray, np.ndarray]  # (xs, ys), float


@dataclass(frozen=True)
class Drawing:
    """One drawing.

    Attributes:
        word: The category the person was asked to draw.
        key_id: The data set's id of the drawing.
        strokes: The strokes in drawing order, each ``(xs, ys)`` float arrays.
    """

    word: str
    key_id: str
    strokes: tuple[Stroke, ...]


def read_drawings(path: str | Path) -> list[Drawing]:
    """Read one ``<word>.ndjson`` file of the simplified data set.

    Args:
        path: The file.

    Returns:
        Its drawings, in file order; drawings without a stroke are skipped.

    Raises:
        ValueError: A line that is not a drawing (the message names the file and line).
    """
    drawings = []
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                strokes = tuple(
                    (np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)) for xs, ys in row["drawing"]
                )
                if any(len(xs) != len(ys) or len(xs) == 0 for xs, ys in strokes):
                    raise ValueError("a stroke's xs and ys differ in length or are empty")
                word, key_id = str(row["word"]), str(row.get("key_id", number))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not a Quick, Draw! drawing ({exc})") from exc
            if strokes:
                drawings.append(Drawing(word=word, key_id=key_id, strokes=strokes))
    return drawings


def read_folder(folder: str | Path, words: Sequence[str] | None = None) -> Iterator[Drawing]:
    """Read every ``*.ndjson`` of a folder (or only the files of ``words``), in file-name order.

    Args:
        folder: A folder of ``<word>.ndjson`` files.
        words: Categories to read; ``None`` for all.

    Yields:
        The drawings, file by file.

    Raises:
        FileNotFoundError: The folder, or a requested word's file, does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no Quick, Draw! folder at {folder}")
    files = sorted(folder.glob("*.ndjson")) if words is None else [folder / f"{w}.ndjson" for w in words]
    for path in files:
        if not path.exists():
            raise FileNotFoundError(f"no Quick, Draw! file {path}")
        yield from read_drawings(path)


def cut_strokes(strokes: Sequence[Stroke], fraction: float) -> tuple[Stroke, ...]:
    """The first ``fraction`` of the strokes (at least one): an unfinished drawing.

    Args:
        strokes: Strokes in drawing order.
        fraction: In (0, 1].

    Returns:
        The first ``max(1, round(fraction * len(strokes)))`` strokes.

    Raises:
        ValueError: ``fraction`` outside (0, 1].
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    keep = max(1, round(fraction * len(strokes)))
    return tuple(strokes[:keep])


def transform_strokes(
    strokes: Sequence[Stroke], *, angle: float = 0.0, flip: bool = False, scale: float = 1.0, stretch: float = 1.0
) -> tuple[Stroke, ...]:
    """Rotate (degrees, about the box centre), mirror horizontally, scale and stretch (x only) a stroke list.

    Args:
        strokes: Strokes in the 256 box.
        angle: Rotation in degrees, counter-clockwise.
        flip: Mirror left-right.
        scale: Uniform scale about the centre.
        stretch: Extra horizontal scale (aspect change).

    Returns:
        The transformed strokes (still centred on the box; :func:`render_strokes` fits them to the canvas).
    """
    centre = QUICKDRAW_BOX / 2
    radians = math.radians(angle)
    cos, sin = math.cos(radians), math.sin(radians)
    out = []
    for xs, ys in strokes:
        x, y = xs - centre, ys - centre
        if flip:
            x = -x
        x = x * scale * stretch
        y = y * scale
        out.append((centre + cos * x + sin * y, centre - sin * x + cos * y))
    return tuple(out)


def render_strokes(strokes: Sequence[Stroke], *, size: int = 256, width: float = 3.0, pad: float = 0.06) -> Image.Image:
    """Draw strokes black on white as the drawing page's canvas does (round caps and joins).

    The strokes' bounding box is fitted into the canvas with ``pad`` of white on each side, keeping the aspect.

    Args:
        strokes: Strokes, any coordinate range.
        size: Canvas side in pixels.
        width: Line width in canvas pixels.
        pad: White margin as a fraction of ``size``.

    Returns:
        A mode ``"L"`` image, ``size`` x ``size``.

    Raises:
        ValueError: No stroke, ``size`` < 8 or ``width`` <= 0.
    """
    if not strokes:
        raise ValueError("a drawing needs at least one stroke")
    if size < 8 or width <= 0:
        raise ValueError(f"size must be >= 8 and width > 0, got {size} and {width}")
    xs = np.concatenate([s[0] for s in strokes])
    ys = np.concatenate([s[1] for s in strokes])
    x0, y0 = float(xs.min()), float(ys.min())
    extent = max(float(xs.max()) - x0, float(ys.max()) - y0, 1.0)
    inner = size * (1 - 2 * pad)
    factor = inner / extent
    # Centre the box in the canvas.
    offset_x = (size - (float(xs.max()) - x0) * factor) / 2
    offset_y = (size - (float(ys.max()) - y0) * factor) / 2
    image = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(image)
    radius = width / 2
    for sx, sy in strokes:
        px_list = ((sx - x0) * factor + offset_x).tolist()
        py_list = ((sy - y0) * factor + offset_y).tolist()
        points = list(zip(px_list, py_list, strict=True))
        if len(points) > 1:
            draw.line(points, fill=0, width=max(1, round(width)), joint="curve")
        # Round caps (and a one-point stroke's dot), as the canvas's lineCap = "round" draws them.
        for px, py in (points[0], points[-1]):
            draw.ellipse((px - radius, py - radius, px + radius, py + radius), fill=0)
    return image
