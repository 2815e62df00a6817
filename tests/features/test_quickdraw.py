"""Quick, Draw! reading, rendering and cutting (pure: no Django)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from indexing.features.quickdraw import cut_strokes, read_drawings, read_folder, render_strokes, transform_strokes

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "quickdraw-344"


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_reads_strokes_in_order_and_renders_them_black_on_white(tmp_path: Path) -> None:
    line = {"word": "cat", "key_id": "1", "drawing": [[[0, 255], [128, 128]], [[128], [128]]]}
    (drawing,) = read_drawings(_write(tmp_path / "cat.ndjson", [line]))
    assert drawing.word == "cat"
    assert len(drawing.strokes) == 2
    image = np.asarray(render_strokes(drawing.strokes, size=64, width=4))
    assert image.shape == (64, 64)
    assert image[32, 5:59].max() == 0  # the horizontal stroke, fitted into the padded canvas
    assert image[0].min() == 255
    assert image[:, 0].min() == 255
    assert (image < 128).sum() > (np.asarray(render_strokes(drawing.strokes, size=64, width=1)) < 128).sum()


def test_a_one_point_stroke_is_a_dot() -> None:
    image = np.asarray(render_strokes([(np.array([10.0]), np.array([10.0]))], size=32, width=6))
    assert (image < 128).sum() >= 9


def test_cut_keeps_the_first_strokes() -> None:
    strokes = tuple((np.array([float(i)]), np.array([0.0])) for i in range(8))
    assert [s[0][0] for s in cut_strokes(strokes, 0.5)] == [0, 1, 2, 3]
    assert len(cut_strokes(strokes, 0.01)) == 1
    with pytest.raises(ValueError, match="fraction"):
        cut_strokes(strokes, 0.0)


def test_flip_mirrors_about_the_centre() -> None:
    ((xs, ys),) = transform_strokes([(np.array([0.0, 64.0]), np.array([10.0, 10.0]))], flip=True)
    assert xs.tolist() == [256.0, 192.0]
    assert ys.tolist() == [10.0, 10.0]


def test_bad_lines_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "dog.ndjson"
    path.write_text('{"word": "dog", "drawing": [[[1, 2], [3]]]}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"dog.ndjson:1"):
        read_drawings(path)
    with pytest.raises(FileNotFoundError):
        list(read_folder(tmp_path / "missing"))


def test_reads_the_shared_data_set() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"Quick, Draw! drawings not found at {SHARED} (see ../shared/data/README.md)")
    drawings = list(read_folder(SHARED, ["cat", "wine bottle"]))
    assert len(drawings) == 30
    assert {d.word for d in drawings} == {"cat", "wine bottle"}
    assert all(len(d.strokes) >= 1 for d in drawings)
