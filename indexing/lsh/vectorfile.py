"""One index version's vectors on disk, memory-mapped read-only by every process that serves it.

A web or worker process that loaded the whole feature matrix into its own memory held 4 KB per image per process
(12 GB at a million images, twice during a flip). The vectors of a version never change once it is built, so the
builder writes them once to a folder of ``.npy`` files and each process maps them: the pages live in the kernel's
page cache, shared by all the processes of a machine, and a search touches only its candidates' rows. The folder
is a cache: the database's Feature rows stay the source of truth and a missing folder is written again from them.

Layout (all ``.npy``, rows aligned, ids ascending): ``ids`` int64 ``(n,)``; ``vectors`` float32 ``(n, dim)``,
L2-normalised; ``compact`` int8 ``(n, dim)``, the same vectors times ``meta.json``'s ``compact_scale`` (127 over
their largest absolute coordinate), rounded, for a first pass over many candidates; ``codes`` uint64
``(n, words)`` sign codes (:mod:`indexing.lsh.codes`) with their ``projections`` (and ``center``); ``labels``
int32 ``(n,)`` and ``kinds`` int8 ``(n,)``, positions in ``meta.json``'s ``label_names`` and ``kind_names`` (the
filters of a search); ``row_of`` int32 ``(last id - first id + 1,)``, the row of each id in that range (-1: not
here), written when the ids are dense enough (a span of at most :data:`DENSE_SPAN` times their number), so that a
search finds its candidates' rows with one gather instead of a binary search each.

Why the int8 copy: a re-rank of the 12,000 candidates a million-image search gathers read 48 MB of float rows at
random, most of its time. Their int8 rows are a quarter of that, and the order they give keeps the exact top 10
within the best few hundred (the search re-ranks those exactly: indexing.services.search); 1 KB more per image on
disk and in the shared page cache. Not every collection's vectors survive the rounding: a sharply peaked
class-probability vector keeps one large coordinate and rounds most of the small ones, which order its class's
images, to zero. So the writer measures the copy on a sample of the folder's own rows (:func:`compact_recall`,
stored as ``meta.json``'s ``compact_recall``) and the search uses it only when that is at least
:data:`COMPACT_MIN_RECALL`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import mmap
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexing.lsh.codes import SignCodes

__all__ = [
    "COMPACT_MIN_RECALL",
    "FORMAT",
    "VectorFile",
    "compact_recall",
    "compact_rows",
    "compact_scale",
    "sorted_rows",
    "vector_file_open",
    "vector_file_write",
]

FORMAT = 3
_CHUNK = 65536
MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux's value; Python 3.12 names it
COMPACT_MIN_RECALL = 0.99  # the int8 copy is used only where it keeps this share of the exact top 10 (see above)
DENSE_SPAN = 4  # row_of is written when last id - first id < DENSE_SPAN * n + 1024 (4 bytes per id of the span)


@dataclass(frozen=True, eq=False)
class VectorFile:
    """A mapped version folder (see the module docstring)."""

    path: Path
    ids: np.ndarray
    vectors: np.ndarray
    codes: np.ndarray
    coder: SignCodes
    labels: np.ndarray
    kinds: np.ndarray
    label_names: list[str]
    kind_names: list[str]
    compact: np.ndarray | None = None  # int8 copy of ``vectors`` (see the module docstring)
    compact_scale: float = 1.0  # compact = round(vectors * compact_scale)
    compact_recall: float = 0.0  # measured when written (compact_recall()); below COMPACT_MIN_RECALL it is not used
    row_of: np.ndarray | None = None  # see the module docstring

    @property
    def size(self) -> int:
        """Number of rows."""
        return int(self.ids.shape[0])

    @property
    def compact_usable(self) -> np.ndarray | None:
        """The int8 copy where a search may score candidates by it first (it keeps the top 10 on this data)."""
        return self.compact if self.compact_recall >= COMPACT_MIN_RECALL else None

    @property
    def dim(self) -> int:
        """Dimensionality of the vectors."""
        return int(self.vectors.shape[1])

    def rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, found)``: the rows of the ``ids`` held here, and a mask of which ``ids`` those were."""
        if self.row_of is None or self.size == 0:
            return sorted_rows(self.ids, ids)
        offsets = np.asarray(ids, dtype=np.int64) - int(self.ids[0])
        inside = (offsets >= 0) & (offsets < self.row_of.shape[0])
        positions = np.full(offsets.shape[0], -1, dtype=np.int64)
        positions[inside] = self.row_of[offsets[inside]]
        found = positions >= 0
        return positions[found], found

    def populate(self, *, lock: bool = False, chunk: int = 64 << 20) -> tuple[int, bool]:
        """Map every page of the folder's files into this process now (and pin them if ``lock``).

        A page of a mapped file costs a minor fault the first time a process touches it, and a read from disk when
        the kernel has evicted it: a search over 12,000 candidates spent tens of ms faulting their rows in, and a
        machine that reclaims idle page cache (as this project's benchmark VM does) evicts the rows a search
        touches only now and then. Serving calls this in a background thread after a version is loaded
        (indexing.serving). ``madvise(MADV_POPULATE_READ)`` (Linux 5.14) maps the pages; ``mlock`` (``lock``)
        keeps them resident, which needs ``RLIMIT_MEMLOCK`` (or ``CAP_IPC_LOCK``) for the folder's size. Both
        are called through ctypes, which releases the GIL, so searches go on meanwhile. Where they are missing
        one value per page is read instead, and a refused lock leaves the pages unpinned.

        Returns:
            ``(bytes populated, whether they were all locked)``.
        """
        libc = _libc()
        done, locked = 0, lock
        for array in (self.ids, self.row_of, self.labels, self.kinds, self.codes, self.compact, self.vectors):
            if array is None or array.nbytes == 0:
                continue
            first = array.ctypes.data & ~(mmap.PAGESIZE - 1)
            stop = array.ctypes.data + array.nbytes
            for address in range(first, stop, chunk):
                length = min(chunk, stop - address)
                if libc is None or libc.madvise(ctypes.c_void_p(address), ctypes.c_size_t(length), MADV_POPULATE_READ):
                    _touch(array, address - array.ctypes.data, length)  # an older kernel
                if locked and (libc is None or libc.mlock(ctypes.c_void_p(address), ctypes.c_size_t(length))):
                    locked = False  # RLIMIT_MEMLOCK too small, say: the rest stays unpinned
                done += length
        return done, locked

    def label_code(self, label: str) -> int:
        """The code of ``label`` in ``labels`` (-1: no image here has it)."""
        return self.label_names.index(label) if label in self.label_names else -1

    def kind_code(self, kind: str) -> int:
        """The code of a collection kind in ``kinds`` (-1: none here)."""
        return self.kind_names.index(kind) if kind in self.kind_names else -1


def _touch(array: np.ndarray, start: int, length: int) -> None:
    """Read one byte of each page of ``array``'s bytes ``[start, start + length)`` (faults them in)."""
    flat = np.asarray(array).reshape(-1).view(np.uint8)
    int(flat[max(0, start) : start + length : mmap.PAGESIZE].sum())


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, for madvise and mlock (None where there is none to load)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


def compact_scale(vectors: np.ndarray) -> float:
    """The int8 copy's scale for ``vectors``: 127 over their largest absolute coordinate (read in chunks)."""
    largest = 0.0
    for start in range(0, int(vectors.shape[0]), _CHUNK):
        largest = max(largest, float(np.max(np.abs(np.asarray(vectors[start : start + _CHUNK], dtype=np.float32)))))
    return 127.0 / largest if largest > 0 else 1.0


def compact_rows(vectors: np.ndarray, scale: float) -> np.ndarray:
    """The int8 rows of ``vectors`` at ``scale`` (rounded; a coordinate beyond the scale's range is clipped)."""
    return np.clip(np.rint(np.asarray(vectors, dtype=np.float32) * scale), -127, 127).astype(np.int8)


def compact_recall(
    vectors: np.ndarray,
    compact: np.ndarray,
    *,
    sample: int = 10_000,
    queries: int = 50,
    keep: int = 100,
    top_k: int = 10,
    seed: int = 0,
) -> float:
    """How much of the exact top ``top_k`` the int8 rows keep within their best ``keep``, on the data itself.

    ``queries`` rows of a random ``sample`` of the rows are searched among the others of the sample (themselves
    left out): the share of each one's exact top ``top_k`` (float32 cosine) that is among its ``keep`` best by
    ``compact``, averaged. With ``sample = 10,000`` and ``keep = 100`` it is the situation of a search's
    first pass (about 1% of the candidates kept), at a cost of a few 10,000-row products.
    """
    n = int(vectors.shape[0])
    if n <= keep + 1:
        return 1.0  # a shortlist of this size keeps everything
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, min(n, sample), replace=False))
    floats = np.asarray(vectors[rows], dtype=np.float32)
    rough = np.asarray(compact[rows], dtype=np.float32)
    asked = rng.choice(rows.shape[0], min(queries, rows.shape[0]), replace=False)
    kept = []
    for position in asked:
        exact, first = floats @ floats[position], rough @ floats[position]
        exact[position] = first[position] = -np.inf
        truth = np.argsort(-exact, kind="stable")[:top_k]
        shortlist = np.argsort(-first, kind="stable")[:keep]
        kept.append(np.intersect1d(truth, shortlist).shape[0] / truth.shape[0])
    return float(np.mean(kept))


def sorted_rows(held: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, found)``: positions in the ascending ``held`` of the ``ids`` it holds, and which ``ids`` they were."""
    ids = np.asarray(ids, dtype=np.int64)
    if held.shape[0] == 0:
        return np.empty(0, dtype=np.int64), np.zeros(ids.shape[0], dtype=bool)
    positions = np.minimum(np.searchsorted(held, ids), held.shape[0] - 1)
    found = held[positions] == ids
    return positions[found].astype(np.int64), found


def _codes(names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    vocabulary, inverse = np.unique(np.asarray(names, dtype=str), return_inverse=True)
    return inverse.astype(np.int32), [str(v) for v in vocabulary]


def vector_file_write(
    path: str | Path,
    *,
    ids: np.ndarray,
    vectors: np.ndarray,
    labels: Sequence[str],
    kinds: Sequence[str],
    coder: SignCodes,
) -> VectorFile:
    """Write a version folder atomically (a temporary folder renamed into place) and map it.

    ``ids`` must be ascending and distinct, ``vectors`` L2-normalised (they are stored as given).

    Raises:
        ValueError: on misaligned inputs or unsorted ids.
    """
    path = Path(path)
    ids = np.asarray(ids, dtype=np.int64)
    n = ids.shape[0]
    if np.asarray(vectors).shape[0] != n or len(labels) != n or len(kinds) != n:
        raise ValueError("ids, vectors, labels and kinds must have the same length")
    if n > 1 and np.any(np.diff(ids) <= 0):
        raise ValueError("ids must be ascending and distinct")
    if np.asarray(vectors).shape[1:] != (coder.projections.shape[1],):
        raise ValueError(f"vectors must have shape (n, {coder.projections.shape[1]})")
    scale = compact_scale(vectors)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        np.save(staging / "ids.npy", ids)
        stored = np.lib.format.open_memmap(staging / "vectors.npy", mode="w+", dtype=np.float32, shape=(n, coder.dim))
        compact = np.lib.format.open_memmap(staging / "compact.npy", mode="w+", dtype=np.int8, shape=(n, coder.dim))
        codes = np.lib.format.open_memmap(staging / "codes.npy", mode="w+", dtype=np.uint64, shape=(n, coder.words))
        for start in range(0, n, _CHUNK):
            block = np.asarray(vectors[start : start + _CHUNK], dtype=np.float32)
            stored[start : start + block.shape[0]] = block
            compact[start : start + block.shape[0]] = compact_rows(block, scale)
            codes[start : start + block.shape[0]] = coder.encode(block)
        for written in (stored, compact, codes):
            written.flush()
        recall = compact_recall(stored, compact)
        del stored, compact, codes
        np.save(staging / "projections.npy", coder.projections)
        if coder.center is not None:
            np.save(staging / "center.npy", coder.center)
        label_codes, label_names = _codes(labels)
        kind_codes, kind_names = _codes(kinds)
        np.save(staging / "labels.npy", label_codes)
        np.save(staging / "kinds.npy", kind_codes.astype(np.int8))
        if n and int(ids[-1] - ids[0]) < DENSE_SPAN * n + 1024:
            row_of = np.full(int(ids[-1] - ids[0]) + 1, -1, dtype=np.int32)
            row_of[ids - ids[0]] = np.arange(n, dtype=np.int32)
            np.save(staging / "row_of.npy", row_of)
        meta = {
            "format": FORMAT,
            "count": int(n),
            "compact_scale": scale,
            "compact_recall": recall,
            "label_names": label_names,
            "kind_names": kind_names,
        }
        (staging / "meta.json").write_text(json.dumps(meta))
        try:
            os.rename(staging, path)  # atomic; fails if another process put its folder there first
        except OSError:
            if not path.exists():
                raise
            shutil.rmtree(staging)  # a folder written by another process meanwhile: the same rows, keep theirs
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return vector_file_open(path)


def vector_file_open(path: str | Path) -> VectorFile:
    """Map a version folder read-only.

    Raises:
        FileNotFoundError: when the folder (or one of its files) is missing.
        ValueError: when it was written in another format or its files disagree.
    """
    path = Path(path)
    meta = json.loads((path / "meta.json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: vector file format {meta.get('format')}, expected {FORMAT}")
    center_path, row_of_path = path / "center.npy", path / "row_of.npy"
    coder = SignCodes(np.load(path / "projections.npy"), np.load(center_path) if center_path.exists() else None)
    compact = np.load(path / "compact.npy", mmap_mode="r")
    loaded = VectorFile(
        path=path,
        ids=np.load(path / "ids.npy", mmap_mode="r"),
        vectors=np.load(path / "vectors.npy", mmap_mode="r"),
        codes=np.load(path / "codes.npy", mmap_mode="r"),
        coder=coder,
        compact=compact,
        compact_scale=float(meta["compact_scale"]),
        compact_recall=float(meta["compact_recall"]),
        labels=np.load(path / "labels.npy", mmap_mode="r"),
        kinds=np.load(path / "kinds.npy", mmap_mode="r"),
        label_names=list(meta["label_names"]),
        kind_names=list(meta["kind_names"]),
        row_of=np.load(row_of_path, mmap_mode="r") if row_of_path.exists() else None,
    )
    rows = {loaded.ids.shape[0], loaded.vectors.shape[0], loaded.codes.shape[0], compact.shape[0]}
    if rows != {meta["count"]}:
        raise ValueError(f"{path}: its files hold different numbers of rows")
    return loaded
