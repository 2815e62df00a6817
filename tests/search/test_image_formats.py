"""Real-world query images through the API: unusual formats work, hostile ones are a clear 400."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageDraw
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from tests.conftest import sketch_png
from tests.search.fakes import BuiltIndex
from tests.search.test_apis import SEARCH, assert_json_error, data_url, upload

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


def big_canvas_png(side: int) -> bytes:
    """What a huge drawing canvas sends: thick black strokes on transparent pixels (compresses to a few hundred KB)."""
    img = PILImage.new("RGBA", (side, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    for k in range(6):
        start = (side // 8, side // 8 + k * side // 8)
        draw.line((*start, 7 * side // 8, side // 2), fill=(0, 0, 0, 255), width=side // 80)
    return _encode(img, "PNG")


def test_a_big_canvas_is_decoded_to_the_size_the_model_needs(
    built: BuiltIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 4096 x 4096 RGBA canvas was decoded, composited and preprocessed at full size (16.8 MP, ~600 MB peak).
    from indexing.features.preprocess import QUERY_DECODE_SIDE
    from indexing.services import search

    seen: list[tuple[int, int]] = []
    original = search.preprocess_sketch

    def spy(img: PILImage.Image, size: int, **kwargs: object) -> np.ndarray:
        seen.append(img.size)
        return original(img, size, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(search, "preprocess_sketch", spy)
    response = APIClient().post(SEARCH, {"image": upload(big_canvas_png(4096))}, format="multipart")
    assert response.status_code == 200, response.content
    assert response.json()["results"]
    assert seen == [(QUERY_DECODE_SIDE, QUERY_DECODE_SIDE)]


def test_a_query_over_the_query_pixel_cap_is_refused_before_decoding(built: BuiltIndex) -> None:
    # 6300 x 6300 = 39.7 MP: under the import cap (40 MP), over the query cap (4096 x 4096).
    message = assert_json_error(
        APIClient().post(SEARCH, {"image": upload(decompression_bomb_png(6300))}, format="multipart"), 400
    )
    assert "6300x6300" in message
    assert "16777216" in message


def test_the_query_pixel_cap_is_a_setting(built: BuiltIndex, settings: Settings) -> None:
    settings.SKETCHSEARCH_QUERY_MAX_PIXELS = 90 * 90
    message = assert_json_error(APIClient().post(SEARCH, {"image": upload(sketch_png(2, size=96))}), 400)
    assert "96x96" in message
    settings.SKETCHSEARCH_QUERY_MAX_PIXELS = 96 * 96
    assert APIClient().post(SEARCH, {"image": upload(sketch_png(2, size=96))}).status_code == 200


@pytest.mark.parametrize(
    "blank",
    [
        _encode(PILImage.new("RGB", (300, 300), "white"), "PNG"),
        _encode(PILImage.new("RGBA", (512, 512), (0, 0, 0, 0)), "PNG"),  # the untouched canvas
        _encode(PILImage.new("RGB", (300, 300), (250, 250, 250)), "JPEG", quality=70),
    ],
    ids=["white-png", "transparent-canvas", "off-white-jpeg"],
)
def test_a_blank_drawing_is_a_400_saying_nothing_was_drawn(built: BuiltIndex, blank: bytes) -> None:
    # A white 300 x 300 PNG used to answer 200 with arbitrary results (envelopes at 0.58).
    by_file = assert_json_error(APIClient().post(SEARCH, {"image": upload(blank)}, format="multipart"), 400)
    by_url = assert_json_error(APIClient().post(SEARCH, {"image": data_url(blank)}, format="json"), 400)
    assert by_file == by_url == "nothing was drawn: the image is blank"
