"""Small image factories shared by the feature tests."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# ../shared/data next to the checkout (see ../shared/data/README.md); override with SKETCHSEARCH_DATA_DIR.
DATA_DIR = Path(os.environ.get("SKETCHSEARCH_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data"))
TU_BERLIN = DATA_DIR / "tu-berlin-40" / "png"


def png_bytes(img: Image.Image, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **params)
    return buf.getvalue()


def canvas_drawing(size: int = 120, *, box: tuple[int, int, int, int] = (30, 40, 90, 70)) -> Image.Image:
    """What the drawing page posts: black strokes on a fully transparent (0, 0, 0, 0) background."""
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.rectangle(box, outline=(0, 0, 0, 255), width=3)
    draw.line((box[0], box[1], box[2], box[3]), fill=(0, 0, 0, 255), width=3)
    return img


def ink_bbox(pixels: np.ndarray, threshold: int = 128) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), inclusive, of the dark pixels of an (h, w, 3) or (h, w) array."""
    gray = pixels if pixels.ndim == 2 else pixels[..., 0]
    rows = np.flatnonzero((gray < threshold).any(axis=1))
    cols = np.flatnonzero((gray < threshold).any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid-header 1-bit PNG claiming width x height pixels, a few hundred bytes long.

    Only the first rows are actually encoded: the decoder must refuse the image from its header alone,
    so the rest of the (highly compressible) pixel stream is irrelevant.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    idat = zlib.compress(row * 16, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
