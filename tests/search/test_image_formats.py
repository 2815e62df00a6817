"""Real-world query images through the API: unusual formats work, hostile ones are a clear 400."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image as PILImage
from rest_framework.test import APIClient

from tests.conftest import sketch_png
from tests.search.fakes import BuiltIndex
from tests.search.test_apis import SEARCH, assert_json_error, upload

pytestmark = pytest.mark.django_db


def _sketch(mode: str) -> PILImage.Image:
    return PILImage.open(io.BytesIO(sketch_png(21, size=96))).convert(mode)


def _encode(img: PILImage.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def animated_gif() -> bytes:
    frames = [_sketch("L"), PILImage.new("L", (96, 96), 255)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def cmyk_jpeg() -> bytes:
    return _encode(_sketch("CMYK"), "JPEG", quality=90)


def png_16_bit() -> bytes:
    grey = np.asarray(_sketch("L"), dtype=np.uint16) * 257
    img = PILImage.fromarray(grey)  # uint16 -> mode "I;16"
    assert img.mode == "I;16"
    return _encode(img, "PNG")


def transparent_canvas_png() -> bytes:
    # What the drawing canvas sends: black strokes with alpha on a fully transparent background.
    ink = np.asarray(_sketch("L")) < 128
    rgba = np.zeros((96, 96, 4), dtype=np.uint8)
    rgba[ink, 3] = 255
    return _encode(PILImage.fromarray(rgba, mode="RGBA"), "PNG")


def decompression_bomb_png(side: int = 30_000) -> bytes:
    """A valid 30,000 x 30,000 1-bit PNG of a few KB: decoding it would need ~900 megapixels."""
    row = b"\x00" + b"\x00" * (side // 8)
    raw = zlib.compress(row * side, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "make", [animated_gif, cmyk_jpeg, png_16_bit, transparent_canvas_png], ids=["gif", "cmyk", "16bit", "alpha"]
)
def test_unusual_but_valid_images_are_searched(built: BuiltIndex, make: object) -> None:
    content = make()  # type: ignore[operator]
    response = APIClient().post(SEARCH, {"image": upload(content, "q.img")}, format="multipart")
    assert response.status_code == 200, response.content
    assert response.json()["results"]


def test_the_same_drawing_in_different_formats_finds_the_same_first_result(built: BuiltIndex) -> None:
    firsts = set()
    for make in (transparent_canvas_png, png_16_bit, cmyk_jpeg):
        response = APIClient().post(SEARCH, {"image": upload(make(), "q.img")}, format="multipart")
        firsts.add(response.json()["results"][0]["image_id"])
    assert len(firsts) == 1


def test_a_decompression_bomb_is_refused_without_decoding_it(built: BuiltIndex) -> None:
    bomb = decompression_bomb_png()
    assert len(bomb) < 200_000
    message = assert_json_error(APIClient().post(SEARCH, {"image": upload(bomb)}, format="multipart"), 400)
    assert "pixels" in message.lower() or "too large" in message.lower()
