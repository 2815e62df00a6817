from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indexing.lsh.codes import SignCodes
from indexing.lsh.vectorfile import vector_file_open, vector_file_write


def _write(path: Path, n: int = 300, dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(n, dtype=np.int64) * 3 + 5
    labels = [f"c{i % 4}" for i in range(n)]
    kinds = ["sketches" if i % 2 else "photos" for i in range(n)]
    vector_file_write(path, ids=ids, vectors=vectors, labels=labels, kinds=kinds, coder=SignCodes.draw(dim, bits=64))
    return ids, vectors


def test_round_trip_maps_what_was_written(tmp_path: Path) -> None:
    ids, vectors = _write(tmp_path / "v1")
    opened = vector_file_open(tmp_path / "v1")
    assert opened.size == 300
    assert opened.dim == 8
    assert isinstance(opened.vectors, np.memmap)
    assert not opened.vectors.flags.writeable
    np.testing.assert_array_equal(opened.ids, ids)
    np.testing.assert_array_equal(opened.vectors, vectors)
    np.testing.assert_array_equal(opened.codes, opened.coder.encode(vectors))
    assert [opened.label_names[c] for c in opened.labels[:5]] == ["c0", "c1", "c2", "c3", "c0"]
    assert opened.kind_names[opened.kinds[1]] == "sketches"
    assert opened.label_code("c2") == opened.labels[2]
    assert opened.label_code("nope") == -1


def test_rows_finds_held_ids_only(tmp_path: Path) -> None:
    ids, _ = _write(tmp_path / "v1")
    opened = vector_file_open(tmp_path / "v1")
    rows, found = opened.rows(np.array([ids[10], 6, ids[0], ids[-1] + 3], dtype=np.int64))
    np.testing.assert_array_equal(rows, [10, 0])
    np.testing.assert_array_equal(found, [True, False, True, False])


def test_a_second_writer_keeps_the_first_folder(tmp_path: Path) -> None:
    _write(tmp_path / "v1", n=10)
    _write(tmp_path / "v1", n=20)  # same version written again by another process: the first stays
    assert vector_file_open(tmp_path / "v1").size == 10
    assert [p.name for p in tmp_path.iterdir()] == ["v1"]  # no staging folder left behind


def test_bad_input_and_foreign_folders_are_refused(tmp_path: Path) -> None:
    coder = SignCodes.draw(4, bits=64)
    with pytest.raises(ValueError, match="ascending"):
        vector_file_write(
            tmp_path / "x",
            ids=np.array([2, 1]),
            vectors=np.ones((2, 4)),
            labels=["a", "b"],
            kinds=["", ""],
            coder=coder,
        )
    assert not (tmp_path / "x").exists()
    _write(tmp_path / "v1", n=10)
    meta = json.loads((tmp_path / "v1" / "meta.json").read_text())
    (tmp_path / "v1" / "meta.json").write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(ValueError, match="format 99"):
        vector_file_open(tmp_path / "v1")
    with pytest.raises(FileNotFoundError):
        vector_file_open(tmp_path / "missing")
