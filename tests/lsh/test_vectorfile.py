from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indexing.lsh.codes import SignCodes
from indexing.lsh.vectorfile import COMPACT_MIN_RECALL, compact_recall, sorted_rows, vector_file_open, vector_file_write


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
    assert opened.compact is not None
    assert opened.compact.dtype == np.int8
    assert opened.compact_scale == pytest.approx(127 / np.abs(vectors).max())
    assert np.abs(opened.compact / opened.compact_scale - vectors).max() <= 0.5 / opened.compact_scale + 1e-6
    assert np.abs(opened.compact).max() == 127
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


@pytest.mark.parametrize("step", [3, 10_000])  # dense ids: a row map is written; sparse: binary search
def test_rows_of_dense_and_sparse_ids_agree_with_a_binary_search(tmp_path: Path, step: int) -> None:
    rng = np.random.default_rng(1)
    ids = np.arange(200, dtype=np.int64) * step + 5
    vectors = rng.standard_normal((200, 4)).astype(np.float32)
    coder = SignCodes.draw(4, bits=64)
    vector_file_write(tmp_path / "v", ids=ids, vectors=vectors, labels=["a"] * 200, kinds=["k"] * 200, coder=coder)
    opened = vector_file_open(tmp_path / "v")
    assert (opened.row_of is not None) == (step == 3)
    asked = np.concatenate([rng.choice(ids, 50), rng.integers(-10, ids[-1] + 20, 50), [ids[0], ids[-1]]])
    rows, found = opened.rows(asked)
    expected_rows, expected_found = sorted_rows(ids, asked)
    np.testing.assert_array_equal(found, expected_found)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_array_equal(opened.ids[rows], asked[found])


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


def _resident_bytes(path: Path, field: str = "Rss:") -> int:
    """Rss (or another field) of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1].isalnum() and "-" in line.split(" ", 1)[0]:  # a mapping's header line
            inside = line.endswith(str(path))
        elif inside and line.startswith(field):
            total += int(line.split()[1]) * 1024
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_populate_maps_the_pages_of_the_vectors_into_the_process(tmp_path: Path) -> None:
    _write(tmp_path / "v1", n=4096, dim=256)  # 4 MB of vectors
    opened = vector_file_open(tmp_path / "v1")
    path = (tmp_path / "v1" / "vectors.npy").resolve()
    before = _resident_bytes(path)
    assert before < opened.vectors.nbytes // 2  # mapped, not yet touched
    populated, _ = opened.populate(chunk=1 << 20)
    assert populated >= opened.vectors.nbytes
    assert _resident_bytes(path) >= opened.vectors.nbytes
    assert _resident_bytes(path, "Locked:") == 0
    _, locked = opened.populate(lock=True)
    if locked:  # RLIMIT_MEMLOCK allowed it (CI runs as root): the pages are pinned
        assert _resident_bytes(path, "Locked:") >= opened.vectors.nbytes
    else:
        assert _resident_bytes(path, "Locked:") < opened.vectors.nbytes
    np.testing.assert_array_equal(opened.vectors, vector_file_open(tmp_path / "v1").vectors)  # read-only, unchanged


def _kept_share(vectors: np.ndarray, compact: np.ndarray, queries: int = 30) -> float:
    """Brute force over every row: the share of each query row's exact top 10 among its 100 best int8 scores."""
    shares = []
    for q in range(queries):
        exact, rough = vectors @ vectors[q], compact.astype(np.float64) @ vectors[q]
        exact[q] = rough[q] = -np.inf
        shares.append(len(set(np.argsort(-exact)[:10]) & set(np.argsort(-rough)[:100])) / 10)
    return float(np.mean(shares))


def test_the_int8_copy_is_used_only_where_it_keeps_the_top_ten(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    dense = rng.standard_normal((3000, 64)).astype(np.float32)
    logits = 2 * rng.standard_normal((12000, 40))
    logits[np.arange(12000), rng.integers(0, 40, 12000)] += 8  # sharply peaked class probabilities
    peaked = np.exp(logits).astype(np.float32)
    for name, vectors in (("dense", dense), ("peaked", peaked)):
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        labels = ["a"] * vectors.shape[0]
        coder = SignCodes.draw(vectors.shape[1], bits=64)
        ids = np.arange(vectors.shape[0])
        vector_file_write(tmp_path / name, ids=ids, vectors=vectors, labels=labels, kinds=labels, coder=coder)
    dense_file, peaked_file = vector_file_open(tmp_path / "dense"), vector_file_open(tmp_path / "peaked")
    assert dense_file.compact is not None
    assert peaked_file.compact is not None
    assert dense_file.compact_recall >= COMPACT_MIN_RECALL
    assert _kept_share(dense, dense_file.compact) >= COMPACT_MIN_RECALL
    assert dense_file.compact_usable is dense_file.compact
    assert peaked_file.compact_recall < 0.9  # its rounded small coordinates no longer order a class's images
    assert _kept_share(peaked, peaked_file.compact) < 0.9
    assert peaked_file.compact_usable is None
    assert compact_recall(dense[:50], dense_file.compact[:50]) == 1.0  # too few rows to cut: all kept
