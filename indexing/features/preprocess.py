"""Image decoding and preprocessing shared by indexing and querying.

Both paths (bulk ingest and a single query from the drawing canvas) must turn an upload into exactly the
same pixels, otherwise the query vector and the indexed vectors live in slightly different spaces. Every
function here is pure (PIL + NumPy); nothing imports TensorFlow or Django.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_SKETCH_DILATE",
    "MAX_IMAGE_PIXELS",
    "QUERY_DECODE_SIDE",
    "ImageDecodeError",
    "is_blank",
    "load_image",
    "preprocess_photo",
    "preprocess_sketch",
    "scale_longer_side",
    "thin_strokes",
    "to_display_mode",
]

# 40 megapixels covers any phone photo (a 48 MP sensor bins to 12 MP by default) and any canvas export,
# while a decompression bomb (a few KB of PNG that inflates to gigabytes) is rejected before decoding.
MAX_IMAGE_PIXELS = 40_000_000

# Formats a user or an importer may hand us. Restricting PIL's format sniffing keeps rarely used and
# historically fragile decoders (EPS via Ghostscript, ICNS, FLI, ...) out of the attack surface.
# (Multi-picture phone JPEGs still open: the JPEG plugin hands them over to its MPO subclass.)
ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")

# A pixel darker than this counts as ink when looking for the strokes' bounding box. It sits well
# below white so JPEG ringing and scanner noise around a sketch do not stretch the box to the border.
_INK_THRESHOLD = 230

# Stroke thickening used by indexing and querying alike (benchmarks/backbone_quality.py, TU-Berlin-40, MobileNetV1:
# mAP 0.3165 at 0, 0.3275 at 1 (paired-bootstrap 95% CI of the gain [+0.006, +0.016]), 0.3147 at 2). The sketches
# there are 1111 px drawings downscaled to 150 px, so their strokes are faint sub-pixel lines; one pixel of
# thickening brings them closer to the solid strokes ImageNet features respond to.
DEFAULT_SKETCH_DILATE = 1
# With ``thin``, a pixel of the resized sketch darker than this is ink for the thinning (light enough to keep the
# faint grey lines of a downscaled TU-Berlin sketch).
_THIN_THRESHOLD = 200

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})

# A query is decoded to about this many pixels on its longer side (between 1x and 2x it), not to its full size: the
# model sees 224-299 px of the strokes' bounding box, which 1024 px still holds for a sketch drawn on a quarter of
# the picture's width (a 6300 px canvas reduced to 1050 px gives a 224 px input within 0.2% cosine of the full-size
# one), while preprocessing no longer costs seconds and a gigabyte.
QUERY_DECODE_SIDE = 1024
# Modes Image.reduce averages correctly as they are (it premultiplies LA/RGBA itself); palette indices, bilevel and
# 16-bit pixels are converted by to_display_mode first.
_REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "CMYK"})

# A picture is blank when no pixel differs from its background (the median grey, after compositing on white) by more
# than this: the same margin as the ink threshold, so "blank" means preprocess_sketch would find no stroke to crop to.
BLANK_TOLERANCE = 255 - _INK_THRESHOLD


class ImageDecodeError(ValueError):
    """An upload or a file that cannot be turned into pixels; the message says why."""


def load_image(
    source: bytes | str | Path, *, max_pixels: int = MAX_IMAGE_PIXELS, max_side: int | None = None
) -> Image.Image:
    """Decode an image safely and return it in mode ``"RGB"`` or ``"L"``.

    Handles the inputs a sketch search meets in practice: canvas PNGs with a transparent background
    (composited onto white, so black strokes stay black), palette images, 16-bit grayscale PNGs (scaled,
    not clipped, to 8 bits), CMYK JPEGs, animated GIFs (first frame) and EXIF-rotated phone photos.

    With ``max_side``, an image at least twice that size on its longer side is shrunk by a whole factor as it is
    decoded, to between ``max_side`` and ``2 * max_side``: a JPEG is decoded at 1/2, 1/4 or 1/8 scale
    (``Image.draft``, nearly free), anything else is box-reduced right after decoding, before any conversion, so
    the full-size pixels are held once and never converted or composited.

    Args:
        source: The encoded file content, or a path to the file.
        max_pixels: Largest accepted ``width * height``; larger images are refused before decoding.
        max_side: Shrink larger images towards this longer side (``QUERY_DECODE_SIDE`` for queries); ``None``
            decodes at full size (indexing).

    Returns:
        A fully loaded (not lazy) image in mode ``"L"`` for grayscale sources, ``"RGB"`` otherwise.

    Raises:
        ImageDecodeError: Empty input, an unknown or disallowed format, a truncated or corrupt file,
            or an image larger than ``max_pixels``.
        FileNotFoundError: ``source`` is a path that does not exist.
        ValueError: ``max_side`` < 1.
    """
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    label = _describe(source)
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise ImageDecodeError("empty upload (0 bytes): not an image")
        return _decode(io.BytesIO(source), label, max_pixels, max_side)
    path = Path(source)
    if path.stat().st_size == 0:  # stat() raises FileNotFoundError for a missing file, which is not a decode error
        raise ImageDecodeError(f"empty file (0 bytes): {path}")
    with path.open("rb") as fp:
        return _decode(fp, label, max_pixels, max_side)


def _describe(source: bytes | str | Path) -> str:
    if isinstance(source, bytes | bytearray | memoryview):
        return f"upload of {len(source)} bytes"
    return str(source)


def _decode(fp: IO[bytes], label: str, max_pixels: int, max_side: int | None) -> Image.Image:
    try:
        img = Image.open(fp, formats=ALLOWED_FORMATS)
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"not a recognised image ({', '.join(ALLOWED_FORMATS)}): {label}") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # PIL's own guard fires at open() above 2x its global limit (or 1x when warnings are errors).
        raise ImageDecodeError(f"image too large, refused as a possible decompression bomb: {label} ({exc})") from exc
    except OSError as exc:
        raise ImageDecodeError(f"cannot read image header: {label} ({exc})") from exc
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image has no pixels ({width}x{height}): {label}")
    if width * height > max_pixels:
        # Checked before load(): the header alone tells the size, so a bomb is never inflated.
        raise ImageDecodeError(
            f"image too large: {width}x{height} = {width * height} pixels > {max_pixels} "
            f"(possible decompression bomb): {label}"
        )
    try:
        if getattr(img, "is_animated", False):
            img.seek(0)  # animated GIF/WebP/PNG: the first frame is the picture
        if max_side is not None and img.format == "JPEG" and max(width, height) >= 2 * max_side:
            img.draft(None, (max_side, max_side))  # DCT scaling: decodes at the largest 1/2^n still >= max_side
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"image too large, refused as a possible decompression bomb: {label} ({exc})") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # PIL reports a truncated stream as OSError("image file is truncated ...") and a broken
        # chunk/CRC as SyntaxError or ValueError, depending on the plugin.
        raise ImageDecodeError(f"truncated or corrupt image: {label} ({exc})") from exc
    oriented: Image.Image = img
    if max_side is not None and img.mode in _REDUCIBLE_MODES:
        oriented = _shrink(img, max_side)  # keeps img.info, so the EXIF orientation below still applies
    # Phone photos store their rotation in EXIF, not in the pixels. A malformed EXIF block must not make an
    # otherwise good image unusable, hence the broad suppress.
    with contextlib.suppress(Exception):
        oriented = ImageOps.exif_transpose(oriented)
    flat = to_display_mode(oriented)
    return flat if max_side is None else _shrink(flat, max_side)


def _shrink(img: Image.Image, max_side: int) -> Image.Image:
    factor = max(img.size) // max_side
    return img.reduce(factor) if factor >= 2 else img


def is_blank(img: Image.Image, *, tolerance: int = BLANK_TOLERANCE) -> bool:
    """Whether nothing was drawn: no pixel differs from the background by more than ``tolerance``.

    The picture is flattened onto white and turned grey first, and its background is its median grey, so a white
    canvas, a transparent one, an all-black one and a JPEG of an empty page with a little noise are all blank,
    while a single stroke of the canvas pen is not.

    Args:
        img: The decoded picture, any PIL mode.
        tolerance: Largest difference from the background, in grey levels, that still counts as background.

    Returns:
        True when there is nothing to search with.

    Raises:
        ValueError: ``tolerance`` outside [0, 255].
    """
    if not 0 <= tolerance <= 255:
        raise ValueError(f"tolerance must be in [0, 255], got {tolerance}")
    gray = to_display_mode(img).convert("L")
    counts = np.asarray(gray.histogram(), dtype=np.int64)  # 256 counts, computed in C: no pixel array is copied
    present = np.flatnonzero(counts)
    if present.size == 0:
        return True  # no pixel at all
    background = int(np.searchsorted(np.cumsum(counts), (counts.sum() + 1) // 2))  # the median grey level
    return max(background - int(present[0]), int(present[-1]) - background) <= tolerance


def scale_longer_side(img: Image.Image, side: int) -> Image.Image:
    """``img`` resized (Lanczos) so that its longer side is ``side`` pixels; itself when it already is.

    Edge detection runs at this size, so an edge map's density does not depend on the source's resolution.
    """
    scale = side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img if size == img.size else img.resize(size, Image.Resampling.LANCZOS)


def to_display_mode(img: Image.Image) -> Image.Image:
    """Convert any PIL image to ``"L"`` or ``"RGB"``, compositing transparency onto white.

    Args:
        img: An image in any PIL mode.

    Returns:
        ``img`` itself when already ``"L"``/``"RGB"``, else a converted copy.
    """
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        return _high_bit_depth_to_l(img)
    if mode == "P":
        # A palette image may mark one index as transparent (GIF, PNG tRNS): go through RGBA then.
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    elif mode in ("PA", "La", "RGBa"):
        img = img.convert("RGBA")
        mode = img.mode
    if mode in ("LA", "RGBA"):
        return _composite_on_white(img)
    # CMYK (Pillow undoes Adobe's inverted CMYK itself), YCbCr, LAB, HSV, ...
    return img.convert("RGB")


def _high_bit_depth_to_l(img: Image.Image) -> Image.Image:
    # PIL's own I;16 -> L conversion clips at 255 instead of scaling, which turns a 16-bit
    # grayscale PNG almost entirely white; scale the full range down instead.
    values = np.asarray(img)
    if img.mode in _SIXTEEN_BIT_MODES or values.max(initial=0) > 255:
        values = values.astype(np.float64) * (255.0 / 65535.0)
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def _composite_on_white(img: Image.Image) -> Image.Image:
    # A canvas drawing is typically black strokes on fully transparent black (0, 0, 0, 0) pixels:
    # dropping the alpha would make the whole picture black, compositing onto white keeps the strokes.
    gray = img.mode == "LA"
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    flat = Image.alpha_composite(background, rgba)
    return flat.convert("L" if gray else "RGB")


def preprocess_sketch(
    img: Image.Image, size: int, *, margin: float = 0.05, dilate: int = DEFAULT_SKETCH_DILATE, thin: bool = False
) -> np.ndarray:
    """Normalise a sketch: dark strokes on white, cropped to the strokes, square, resized, 3 channels.

    Steps: flatten transparency onto white; invert if the drawing is light-on-dark (so the network always
    sees dark strokes on white, as in the training data); crop to the bounding box of the ink; pad that
    box to a square with ``margin`` of white on each side; resize with Lanczos antialiasing; optionally
    thicken the strokes (a ``MinFilter`` on the resized image, so the thickening is in output pixels
    whatever the source resolution).

    Args:
        img: The decoded sketch, any PIL mode (``load_image`` output, or a canvas RGBA image).
        size: Output side in pixels (the backbone's input size, e.g. 224 or 299).
        margin: White border added around the strokes, as a fraction of the strokes' longer side.
        dilate: Stroke thickening radius in output pixels (0 = none; 1 = a 3x3 minimum filter). Indexed and query
            vectors must use the same value; the default is ``DEFAULT_SKETCH_DILATE``.
        thin: Normalise the strokes first: the resized sketch is binarised and thinned to one-pixel lines
            (:func:`thin_strokes`) before the thickening, so every sketch reaches the backbone with the same black
            strokes whatever its pen, resolution or grey level (measured, not served: docs/relevance.md).

    Returns:
        ``uint8`` array of shape ``(size, size, 3)``; an all-white image when there are no strokes.

    Raises:
        ValueError: ``size`` < 1, ``margin`` outside [0, 1] or ``dilate`` < 0.
    """
    _check_size(size)
    if not 0.0 <= margin <= 1.0:
        raise ValueError(f"margin must be in [0, 1], got {margin}")
    if dilate < 0:
        raise ValueError(f"dilate must be >= 0, got {dilate}")
    gray = to_display_mode(img).convert("L")
    pixels = np.asarray(gray)
    if pixels.size and np.median(pixels) < 128:
        # Mostly dark picture: a light-on-dark drawing (e.g. a dark-theme canvas). Strokes are always
        # the minority of a sketch's pixels, so the median tells the background colour.
        pixels = 255 - pixels
    ink = pixels < _INK_THRESHOLD
    rows = np.flatnonzero(ink.any(axis=1))
    if rows.size == 0:
        return np.full((size, size, 3), 255, dtype=np.uint8)  # empty drawing: nothing to crop to
    cols = np.flatnonzero(ink.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    strokes = pixels[top:bottom, left:right]
    height, width = strokes.shape
    side = max(height, width)
    pad = round(margin * side)
    canvas_side = side + 2 * pad
    canvas = np.full((canvas_side, canvas_side), 255, dtype=np.uint8)
    y0 = (canvas_side - height) // 2
    x0 = (canvas_side - width) // 2
    canvas[y0 : y0 + height, x0 : x0 + width] = strokes
    square = Image.fromarray(canvas, mode="L")
    if canvas_side != size:
        # reducing_gap: a box-filter reduce() first, then Lanczos, for large downscales - same quality, faster.
        square = square.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    if thin:
        skeleton = thin_strokes(np.asarray(square) < _THIN_THRESHOLD)
        square = Image.fromarray(np.where(skeleton, 0, 255).astype(np.uint8), mode="L")
    if dilate:
        square = square.filter(ImageFilter.MinFilter(2 * dilate + 1))
    out = np.asarray(square, dtype=np.uint8)
    return np.repeat(out[:, :, None], 3, axis=2)


def thin_strokes(ink: np.ndarray) -> np.ndarray:
    """The one-pixel skeleton of a boolean ink mask (Zhang and Suen's thinning, 1984, vectorised).

    Each pass removes, in two sub-steps, the boundary pixels whose removal keeps the strokes connected (2 to 6 ink
    neighbours, exactly one white-to-ink transition around them), until none is left: a stroke of any width
    becomes a line of one or two pixels along its middle, and its ends and junctions stay. About 10 ms for a
    224-pixel sketch.

    Args:
        ink: 2-d boolean array, True where there is ink.

    Returns:
        A boolean array of the same shape: the skeleton (a subset of ``ink``).
    """
    image = np.pad(np.asarray(ink, dtype=bool).astype(np.uint8), 1)
    while True:
        changed = False
        for step in (0, 1):
            p2, p3, p4 = image[:-2, 1:-1], image[:-2, 2:], image[1:-1, 2:]
            p5, p6, p7 = image[2:, 2:], image[2:, 1:-1], image[2:, :-2]
            p8, p9 = image[1:-1, :-2], image[:-2, :-2]
            ring = (p2, p3, p4, p5, p6, p7, p8, p9, p2)
            neighbours = sum(n.astype(np.int16) for n in ring[:8])
            transitions = sum(((ring[i] == 0) & (ring[i + 1] == 1)).astype(np.int16) for i in range(8))
            removable = (image[1:-1, 1:-1] == 1) & (neighbours >= 2) & (neighbours <= 6) & (transitions == 1)
            if step == 0:
                removable &= (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
            else:
                removable &= (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
            if removable.any():
                image[1:-1, 1:-1][removable] = 0
                changed = True
        if not changed:
            return image[1:-1, 1:-1].astype(bool)


def preprocess_photo(img: Image.Image, size: int, *, fit: str = "crop") -> np.ndarray:
    """Square and resize a photo.

    Args:
        img: The decoded photo, any PIL mode.
        size: Output side in pixels.
        fit: ``"crop"`` keeps the centred square (the ImageNet convention); ``"pad"`` keeps the whole
            picture and pads the short side with white.

    Returns:
        ``uint8`` array of shape ``(size, size, 3)``.

    Raises:
        ValueError: ``size`` < 1 or an unknown ``fit``.
    """
    _check_size(size)
    rgb = to_display_mode(img).convert("RGB")
    if fit == "crop":
        square = ImageOps.fit(rgb, (size, size), Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    elif fit == "pad":
        square = ImageOps.pad(rgb, (size, size), Image.Resampling.LANCZOS, color=(255, 255, 255))
    else:
        raise ValueError(f"fit must be 'crop' or 'pad', got {fit!r}")
    return np.asarray(square, dtype=np.uint8).copy()


def _check_size(size: int) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
