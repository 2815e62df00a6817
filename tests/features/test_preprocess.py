from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from indexing.features.preprocess import (
    DEFAULT_SKETCH_DILATE,
    QUERY_DECODE_SIDE,
    ImageDecodeError,
    is_blank,
    load_image,
    preprocess_photo,
    preprocess_sketch,
    thin_strokes,
    to_display_mode,
)
from tests.features.helpers import bomb_png, canvas_drawing, ink_bbox, png_bytes

# ------------------------------------------------------------------------------------------------ decoding


def test_transparent_canvas_png_decodes_to_black_strokes_on_white() -> None:
    img = load_image(png_bytes(canvas_drawing()))
    assert img.mode == "RGB"
    pixels = np.asarray(img)
    assert tuple(pixels[0, 0]) == (255, 255, 255)  # transparent black background became white
    assert tuple(pixels[40, 30]) == (0, 0, 0)  # opaque black stroke stays black


def test_la_png_with_transparency_decodes_to_gray_on_white() -> None:
    img = Image.new("LA", (20, 20), (0, 0))
    img.putpixel((5, 5), (0, 255))
    decoded = load_image(png_bytes(img))
    assert decoded.mode == "L"
    assert decoded.getpixel((0, 0)) == 255
    assert decoded.getpixel((5, 5)) == 0


def test_palette_png_with_transparent_index_gets_white_background() -> None:
    img = Image.new("P", (10, 10), 0)
    img.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    img.putpixel((2, 2), 1)
    decoded = load_image(png_bytes(img, transparency=0))
    assert decoded.mode == "RGB"
    assert decoded.getpixel((0, 0)) == (255, 255, 255)
    assert decoded.getpixel((2, 2)) == (200, 0, 0)


def test_palette_png_without_transparency_keeps_its_colours() -> None:
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    assert load_image(png_bytes(img)).getpixel((1, 1)) == (10, 20, 30)


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    values = np.full((8, 8), 32768, dtype=np.uint16)
    values[0, 0] = 0
    values[0, 1] = 65535
    decoded = load_image(png_bytes(Image.fromarray(values)))
    assert decoded.mode == "L"
    assert decoded.getpixel((4, 4)) == 128  # PIL's own conversion would give 255
    assert decoded.getpixel((0, 0)) == 0
    assert decoded.getpixel((1, 0)) == 255


def test_cmyk_jpeg_decodes_to_rgb() -> None:
    buf = io.BytesIO()
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(buf, "JPEG", quality=95)  # pure red in CMYK
    decoded = load_image(buf.getvalue())
    assert decoded.mode == "RGB"
    pixel = decoded.getpixel((8, 8))
    assert isinstance(pixel, tuple)
    red, green, blue = pixel[:3]
    assert red > 200
    assert green < 60
    assert blue < 60


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("L", (12, 12), 0), Image.new("L", (12, 12), 255)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    decoded = load_image(buf.getvalue())
    assert np.asarray(decoded.convert("L")).max() < 10


def test_load_image_reads_paths(tmp_path: Path) -> None:
    path = tmp_path / "sketch.png"
    path.write_bytes(png_bytes(canvas_drawing()))
    assert load_image(path).size == load_image(str(path)).size == (120, 120)


def test_exif_rotation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    assert load_image(buf.getvalue()).size == (20, 40)


def big_canvas(side: int, mode: str = "RGBA") -> Image.Image:
    """A side x side drawing: a thick black frame and diagonal on a transparent (RGBA) or white background."""
    img = Image.new(mode, (side, side), (0, 0, 0, 0) if mode == "RGBA" else "white")
    draw = ImageDraw.Draw(img)
    ink = (0, 0, 0, 255) if mode == "RGBA" else "black"
    draw.rectangle((side // 4, side // 4, 3 * side // 4, 3 * side // 4), outline=ink, width=side // 100)
    draw.line((side // 4, side // 4, 3 * side // 4, 3 * side // 4), fill=ink, width=side // 100)
    return img


def jpeg_bytes(img: Image.Image, **params: object) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=90, **params)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("encode", "mode"),
    [(png_bytes, "RGBA"), (png_bytes, "RGB"), (png_bytes, "L"), (jpeg_bytes, "RGB"), (png_bytes, "P")],
    ids=["png-rgba", "png-rgb", "png-grey", "jpeg", "png-palette"],
)
def test_max_side_decodes_a_big_image_shrunk_and_preprocesses_it_like_the_full_one(encode: object, mode: str) -> None:
    img = big_canvas(2600, "RGBA" if mode == "RGBA" else "RGB")
    if mode != "RGBA":
        img = img.convert(mode)
    data = encode(img)  # type: ignore[operator]
    full = load_image(data)
    small = load_image(data, max_side=QUERY_DECODE_SIDE)
    assert full.size == (2600, 2600)
    assert QUERY_DECODE_SIDE <= max(small.size) < 2 * QUERY_DECODE_SIDE
    assert small.mode == full.mode
    a = 255.0 - preprocess_sketch(full, 224).astype(np.float64)
    b = 255.0 - preprocess_sketch(small, 224).astype(np.float64)
    assert float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b)) > 0.99  # same sketch for the model


def test_max_side_leaves_images_under_twice_its_size_untouched() -> None:
    data = png_bytes(big_canvas(2 * QUERY_DECODE_SIDE - 1))
    shrunk = load_image(data, max_side=QUERY_DECODE_SIDE)
    np.testing.assert_array_equal(np.asarray(shrunk), np.asarray(load_image(data)))


def test_max_side_keeps_the_exif_rotation_of_a_big_jpeg() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = jpeg_bytes(Image.new("RGB", (4000, 2400), "white"), exif=exif)
    assert load_image(data, max_side=1000).size == (600, 1000)  # drafted at 1/4, then turned upright


def test_max_side_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_side"):
        load_image(png_bytes(canvas_drawing()), max_side=0)


@pytest.mark.parametrize(
    "img",
    [
        Image.new("RGB", (300, 300), "white"),
        Image.new("RGBA", (300, 300), (0, 0, 0, 0)),  # an untouched transparent canvas
        Image.new("L", (300, 300), 0),  # all black
        Image.new("L", (300, 300), 128),
    ],
    ids=["white", "transparent", "black", "grey"],
)
def test_a_uniform_picture_is_blank(img: Image.Image) -> None:
    assert is_blank(img)


def test_a_white_jpeg_with_compression_noise_is_blank() -> None:
    noise = np.random.default_rng(0).integers(-8, 9, (300, 300, 3))
    assert is_blank(load_image(jpeg_bytes(Image.fromarray(np.clip(247 + noise, 0, 255).astype(np.uint8)))))


def test_one_pen_stroke_is_not_blank() -> None:
    img = Image.new("RGBA", (512, 512), (0, 0, 0, 0))
    ImageDraw.Draw(img).line((100, 100, 110, 104), fill=(0, 0, 0, 255), width=2)
    assert not is_blank(img)
    assert not is_blank(load_image(png_bytes(img)))
    assert not is_blank(load_image(png_bytes(canvas_drawing())))


def test_blank_tolerance_is_checked() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        is_blank(Image.new("L", (4, 4)), tolerance=256)


def test_truncated_png_raises_decode_error() -> None:
    data = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)))
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])


def test_text_bytes_raise_decode_error() -> None:
    with pytest.raises(ImageDecodeError, match="not a recognised image"):
        load_image(b"hello, this is not a PNG\n" * 10)


def test_empty_upload_raises_decode_error() -> None:
    with pytest.raises(ImageDecodeError, match="0 bytes"):
        load_image(b"")


def test_empty_file_raises_decode_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match=r"0 bytes.*empty\.png"):
        load_image(path)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "nope.png")


def test_decompression_bomb_is_refused_from_its_header() -> None:
    data = bomb_png(30_000, 30_000)
    assert len(data) < 4096
    with pytest.raises(ImageDecodeError, match="too large"):
        load_image(data)


def test_image_over_own_pixel_limit_is_refused_before_decoding() -> None:
    # 7000 x 7000 = 49 MP: under PIL's global guard (89 MP) but over our 40 MP limit.
    with pytest.raises(ImageDecodeError, match="7000x7000"):
        load_image(bomb_png(7000, 7000))


def test_max_pixels_is_configurable() -> None:
    with pytest.raises(ImageDecodeError, match="> 100"):
        load_image(png_bytes(Image.new("L", (11, 11), 255)), max_pixels=100)


def test_disallowed_format_is_refused() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PPM")
    with pytest.raises(ImageDecodeError, match="not a recognised image"):
        load_image(buf.getvalue())


def test_to_display_mode_keeps_rgb_and_l_untouched() -> None:
    rgb = Image.new("RGB", (2, 2))
    assert to_display_mode(rgb) is rgb


# --------------------------------------------------------------------------------------------------- sketch


def test_sketch_from_canvas_is_dark_strokes_on_white_square() -> None:
    out = preprocess_sketch(canvas_drawing(), 64)
    assert out.shape == (64, 64, 3)
    assert out.dtype == np.uint8
    assert (out[..., 0] == out[..., 1]).all()
    assert (out[..., 1] == out[..., 2]).all()
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert out.min() < 64


def test_sketch_is_cropped_to_strokes_and_centred() -> None:
    # A wide, off-centre stroke box: after cropping the longer side spans the output minus the margin,
    # and the shorter side is centred.
    img = Image.new("L", (400, 300), 255)
    ImageDraw.Draw(img).rectangle((20, 200, 219, 249), fill=0)  # 200 x 50 box in the bottom-left corner
    out = preprocess_sketch(img, 100, margin=0.1, dilate=0)
    top, bottom, left, right = ink_bbox(out)
    width, height = right - left + 1, bottom - top + 1
    assert abs(width - 100 / 1.2) <= 2  # 200 px of strokes + 2 x 20 px margin -> 100 px
    assert abs(height - 50 / 240 * 100) <= 2
    assert abs((top + bottom) / 2 - 49.5) <= 1.5
    assert abs((left + right) / 2 - 49.5) <= 1.5


def test_sketch_margin_zero_touches_the_border() -> None:
    img = Image.new("L", (50, 50), 255)
    ImageDraw.Draw(img).rectangle((10, 10, 39, 39), fill=0)
    assert ink_bbox(preprocess_sketch(img, 30, margin=0.0, dilate=0)) == (0, 29, 0, 29)


def test_empty_drawing_returns_white_image() -> None:
    out = preprocess_sketch(Image.new("RGBA", (300, 200), (0, 0, 0, 0)), 32)
    assert out.shape == (32, 32, 3)
    assert (out == 255).all()


def test_light_on_dark_sketch_is_inverted() -> None:
    img = Image.new("L", (60, 60), 0)
    ImageDraw.Draw(img).line((10, 10, 50, 50), fill=255, width=3)
    out = preprocess_sketch(img, 32)
    assert out[0, -1, 0] == 255  # background (the corner away from the diagonal) became white
    assert out.min() < 64  # strokes became dark


def test_dilation_thickens_strokes() -> None:
    img = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(img).line((0, 0, 199, 199), fill=0, width=2)
    thin = preprocess_sketch(img, 64, dilate=0)
    thick = preprocess_sketch(img, 64, dilate=1)
    assert (thick < 128).sum() > (thin < 128).sum()
    assert (thick <= thin).all()  # a minimum filter only darkens


def test_default_dilation_is_one_pixel() -> None:
    img = canvas_drawing()
    assert DEFAULT_SKETCH_DILATE == 1
    np.testing.assert_array_equal(preprocess_sketch(img, 48), preprocess_sketch(img, 48, dilate=1))


def test_large_sketch_is_downscaled() -> None:
    out = preprocess_sketch(canvas_drawing(1200, box=(100, 100, 1100, 900)), 224)
    assert out.shape == (224, 224, 3)


@pytest.mark.parametrize(("kwargs", "message"), [({"margin": 1.5}, "1.5"), ({"dilate": -1}, "-1")])
def test_sketch_rejects_bad_arguments(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        preprocess_sketch(canvas_drawing(), 32, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, -3, 2.5])
def test_sizes_must_be_positive_ints(size: int) -> None:
    with pytest.raises(ValueError, match=str(size)):
        preprocess_sketch(canvas_drawing(), size)


def test_real_tu_berlin_sketch(tu_berlin: Path) -> None:
    path = next((tu_berlin / "ant").glob("*.png"))
    out = preprocess_sketch(load_image(path), 224, dilate=0)
    top, bottom, left, right = ink_bbox(out, threshold=230)
    # cropped: the strokes' longer side fills the output minus the 5 % margin on each side
    assert max(bottom - top, right - left) >= 224 / 1.1 - 4


# ---------------------------------------------------------------------------------------------------- photo


def test_photo_centre_crop() -> None:
    img = Image.new("RGB", (300, 100), (255, 0, 0))
    img.paste((0, 0, 255), (100, 0, 200, 100))  # blue centre third
    out = preprocess_photo(img, 50)
    assert out.shape == (50, 50, 3)
    assert out[25, 25, 2] > 200
    assert out[25, 25, 0] < 50
    assert out[:, 2, 2].mean() > 200  # the red sides were cropped away


def test_photo_pad_keeps_everything_on_white() -> None:
    out = preprocess_photo(Image.new("RGB", (300, 100), (255, 0, 0)), 60, fit="pad")
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[30, 30]) == (255, 0, 0)


def test_photo_from_grayscale_has_three_channels() -> None:
    assert preprocess_photo(Image.new("L", (10, 20), 7), 8).shape == (8, 8, 3)


def test_photo_rejects_unknown_fit() -> None:
    with pytest.raises(ValueError, match="stretch"):
        preprocess_photo(Image.new("RGB", (4, 4)), 4, fit="stretch")


def _neighbours(mask: np.ndarray) -> set[tuple[int, int]]:
    """The 8-connected component of ``mask``'s first pixel (an independent flood fill)."""
    todo = [tuple(int(v) for v in np.argwhere(mask)[0])]
    seen: set[tuple[int, int]] = set()
    while todo:
        y, x = todo.pop()
        if (y, x) in seen or not (0 <= y < mask.shape[0] and 0 <= x < mask.shape[1]) or not mask[y, x]:
            continue
        seen.add((y, x))
        todo.extend((y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)
    return seen


def test_thinning_leaves_a_connected_one_pixel_line_of_a_stroke_of_any_width() -> None:
    for width in (1, 3, 9):
        image = Image.new("L", (120, 60), 255)
        ImageDraw.Draw(image).line([(10, 10), (60, 45), (110, 12)], fill=0, width=width)
        ink = np.asarray(image) < 128
        skeleton = thin_strokes(ink)
        assert not (skeleton & ~ink).any()  # a subset of the ink
        assert len(_neighbours(skeleton)) == skeleton.sum()  # still one connected stroke
        columns = skeleton.sum(axis=0)
        assert columns[15:105].max() <= 2  # one or two pixels thick along the whole stroke
        assert (columns[16:104] > 0).all()  # and it still spans it (less half a pen at each end)
    assert not thin_strokes(np.zeros((5, 5), dtype=bool)).any()


def test_thin_strokes_make_the_backbone_input_the_same_whatever_the_pen() -> None:
    def drawn(width: int) -> Image.Image:
        image = Image.new("L", (512, 512), 255)
        draw = ImageDraw.Draw(image)
        draw.ellipse((100, 100, 400, 400), outline=0, width=width)
        draw.line([(150, 250), (350, 250)], fill=0, width=width)
        return image

    def ink(image: Image.Image, **options: bool) -> float:
        return float((preprocess_sketch(image, 224, **options)[:, :, 0] < 128).mean())

    thin, thick = drawn(3), drawn(14)
    assert ink(thick) / ink(thin) > 2  # the pen's width reaches the backbone
    assert 0.8 < ink(thick, thin=True) / ink(thin, thin=True) < 1.25  # normalised: the same strokes
    out = preprocess_sketch(thick, 224, thin=True)
    assert out.shape == (224, 224, 3)
    assert set(np.unique(out)) <= {0, 255}  # black strokes on white, no grey
