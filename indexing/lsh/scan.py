"""Exact cosine search: the sequential scan of the paper, and the re-ranking step of LSH queries.

Vectors are L2-normalised float32, so cosine similarity is a dot product and a block of the
collection is scored with one matrix product. The scan is also the ground truth for recall.
"""

from __future__ import annotations

import numpy as np

__all__ = ["as_unit_float32", "cosine_top_k", "look_tie_break", "normalize", "rerank", "row_scores"]

# Rows whose norm is within this of 1 (or exactly 0) count as already normalised.
_UNIT_TOLERANCE = 1e-4
# Rows gathered per matrix-vector product by row_scores: 256 x 1,024 float32 = 1 MB, which stays in the L2 cache.
GATHER_BYTES = 1 << 20


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Return an L2-normalised float32 copy; zero vectors stay zero.

    Args:
        vectors: array of shape ``(n, dim)`` or ``(dim,)``.

    Returns:
        float32 array of the same shape, each row of norm 1 (or 0 for a zero row).

    Raises:
        ValueError: if ``vectors`` is not 1-D or 2-D or holds non-finite values.
    """
    array = np.array(vectors, dtype=np.float32, copy=True)
    if array.ndim not in (1, 2):
        raise ValueError(f"vectors must have shape (n, dim) or (dim,), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("vectors contain NaN or infinite values")
    # Norms in float64: float32 squares of large features can overflow.
    norms = np.linalg.norm(array.astype(np.float64, copy=False), axis=-1, keepdims=True)
    norms[norms == 0] = 1.0  # a zero vector has no direction: keep it zero rather than NaN
    array /= norms.astype(np.float32)
    return array


def as_unit_float32(vectors: np.ndarray) -> np.ndarray:
    """Return ``vectors`` itself if already C-contiguous, float32 and normalised, else a normalised copy.

    Indexes call this so that a caller holding a million normalised features does not pay for a
    second 4 GB copy; the index then shares the caller's array, which must not be modified.

    Args:
        vectors: array of shape ``(n, dim)``.

    Returns:
        float32 C-contiguous array ``(n, dim)`` with rows of norm 1 or 0.

    Raises:
        ValueError: if ``vectors`` is not 2-D or holds non-finite values.
    """
    array = np.asarray(vectors)
    if array.ndim != 2:
        raise ValueError(f"vectors must have shape (n, dim), got shape {array.shape}")
    if array.dtype == np.float32 and array.flags.c_contiguous:
        norms = np.sqrt(np.einsum("ij,ij->i", array, array, dtype=np.float64))
        if np.isfinite(norms).all() and np.all((np.abs(norms - 1.0) <= _UNIT_TOLERANCE) | (norms == 0.0)):
            return array
    return normalize(array)


def _top_k_rows(scores: np.ndarray, rows: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``top_k`` columns of each row of ``scores`` (q, m), sorted by score desc then row asc."""
    if scores.shape[1] > top_k:
        keep = np.argpartition(-scores, top_k - 1, axis=1)[:, :top_k]
        scores = np.take_along_axis(scores, keep, axis=1)
        rows = np.take_along_axis(rows, keep, axis=1)
    # Ties broken by row number so that results do not depend on the block size.
    order = np.lexsort((rows, -scores), axis=1)
    return np.take_along_axis(rows, order, axis=1), np.take_along_axis(scores, order, axis=1)


def cosine_top_k(
    matrix: np.ndarray,
    queries: np.ndarray,
    top_k: int,
    *,
    block_size: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by cosine similarity, scanning the collection block by block.

    Args:
        matrix: float32 array ``(n, dim)`` of L2-normalised vectors.
        queries: array ``(q, dim)`` (or ``(dim,)`` for one query) of L2-normalised vectors.
        top_k: number of results per query, ``>= 1``; fewer come back when ``n < top_k``.
        block_size: rows of ``matrix`` scored per matrix product; bounds memory to ``q * block_size``
            floats.

    Returns:
        ``(rows, scores)``: int64 row numbers and float32 similarities, each ``(q, min(top_k, n))``,
        best first (ties by ascending row).

    Raises:
        ValueError: on non-positive ``top_k`` or ``block_size`` or mismatched shapes.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    matrix = np.asarray(matrix)
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if matrix.ndim != 2 or queries.ndim != 2 or queries.shape[1] != matrix.shape[1]:
        raise ValueError(f"matrix (n, dim) and queries (q, dim) must agree, got {matrix.shape} and {queries.shape}")
    num_queries = queries.shape[0]
    best_rows = np.empty((num_queries, 0), dtype=np.int64)
    best_scores = np.empty((num_queries, 0), dtype=np.float32)
    for start in range(0, matrix.shape[0], block_size):
        block = matrix[start : start + block_size]
        scores = queries @ block.T.astype(np.float32, copy=False)
        rows = np.broadcast_to(np.arange(start, start + block.shape[0], dtype=np.int64), scores.shape)
        rows, scores = _top_k_rows(scores, rows, top_k)
        best_rows, best_scores = _top_k_rows(
            np.concatenate([best_scores, scores], axis=1), np.concatenate([best_rows, rows], axis=1), top_k
        )
    return best_rows, best_scores


def row_scores(matrix: np.ndarray, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Dot products ``(c,)`` of ``query`` with the rows ``rows`` of ``matrix``, in the order given.

    The same numbers as ``matrix[rows] @ query``, computed a cache-sized block at a time: the rows are gathered
    into one small buffer that the product reads back while it is still in the CPU cache. Gathering all of them
    first writes and reads back ``c * dim * 4`` bytes of fresh memory (40 MB for 10,000 1,024-d candidates, most
    of a re-rank's time at a million images, and worse from a memory-mapped matrix). An int8 ``matrix`` (the
    vector folder's compact copy) is gathered as int8, a quarter of the bytes, and each block converted to float32
    in the cache before its product; the scores are then in the matrix's units.

    Args:
        matrix: float32 or int8 array ``(n, dim)`` (a memory map works: only the rows asked for are read).
        rows: int array ``(c,)`` of row numbers into ``matrix``; ascending rows read the matrix in order.
        query: ``(dim,)`` float32 vector.
    """
    rows = np.asarray(rows, dtype=np.int64).ravel()
    query = np.asarray(query, dtype=np.float32)
    scores = np.empty(rows.shape[0], dtype=np.float32)
    if rows.shape[0] == 0:
        return scores
    if matrix.dtype not in (np.float32, np.int8):
        return np.asarray(np.asarray(matrix[rows], dtype=np.float32) @ query, dtype=np.float32)
    block = max(1, GATHER_BYTES // max(1, matrix.shape[1] * 4))
    buffer = np.empty((min(block, rows.shape[0]), matrix.shape[1]), dtype=matrix.dtype)
    floats = buffer if matrix.dtype == np.float32 else np.empty(buffer.shape, dtype=np.float32)
    for start in range(0, rows.shape[0], block):
        chunk = rows[start : start + block]
        gathered = buffer[: chunk.shape[0]]
        np.take(matrix, chunk, axis=0, out=gathered)
        converted = floats[: chunk.shape[0]]
        if floats is not buffer:
            np.copyto(converted, gathered, casting="unsafe")
        np.dot(converted, query, out=scores[start : start + chunk.shape[0]])
    return scores


def rerank(
    matrix: np.ndarray, candidate_rows: np.ndarray, query: np.ndarray, top_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine ranking of a candidate subset: the last step of an LSH query.

    Args:
        matrix: float32 array ``(n, dim)`` of L2-normalised vectors.
        candidate_rows: int array ``(c,)`` of distinct row numbers into ``matrix``.
        query: L2-normalised query ``(dim,)``.
        top_k: number of results, ``>= 1``; fewer come back when ``c < top_k``.

    Returns:
        ``(rows, scores)``: int64 ``(min(top_k, c),)`` rows and float32 similarities, best first
        (ties by ascending row).

    Raises:
        ValueError: on non-positive ``top_k`` or a query of the wrong shape.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    query = np.asarray(query, dtype=np.float32)
    if query.shape != (matrix.shape[1],):
        raise ValueError(f"query must have shape ({matrix.shape[1]},), got shape {query.shape}")
    candidate_rows = np.asarray(candidate_rows, dtype=np.int64).ravel()
    if candidate_rows.shape[0] == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    scores = row_scores(matrix, candidate_rows, query)
    rows, top_scores = _top_k_rows(scores[np.newaxis, :], candidate_rows[np.newaxis, :], top_k)
    return rows[0], top_scores[0]


def look_tie_break(
    ids: np.ndarray, scores: np.ndarray, looks: np.ndarray, weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """Re-order ranked hits by ``(1 - weight) * score + weight * look``, best first (ties by ascending id).

    For an index whose vectors are class probabilities (the served sketch head), every image of the class a
    drawing is recognised as scores about 1, so their order says nothing. ``looks`` is a second similarity of the
    same hits (the backbone cosine: how alike the drawings look); a small ``weight`` orders the near-ties by it
    while a hit can overtake another only if their scores differ by less than ``weight / (1 - weight)`` times the
    difference of their looks. A NaN look (no second vector for that hit) counts as the hit's own score, so that
    hit keeps its score.

    Args:
        ids: int ``(c,)`` hit ids.
        scores: ``(c,)`` first similarities.
        looks: ``(c,)`` second similarities, NaN where unknown.
        weight: In ``[0, 1)``; 0 leaves the scores as they are (re-ordered by score, then id).

    Returns:
        ``(ids, blended scores)`` as int64 and float32, best first.

    Raises:
        ValueError: Mismatched lengths or a weight outside ``[0, 1)``.
    """
    ids = np.asarray(ids, dtype=np.int64).ravel()
    scores = np.asarray(scores, dtype=np.float32).ravel()
    looks = np.asarray(looks, dtype=np.float32).ravel()
    if not ids.shape == scores.shape == looks.shape:
        raise ValueError(f"ids {ids.shape}, scores {scores.shape} and looks {looks.shape} must have one length")
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"weight must be in [0, 1), got {weight}")
    looks = np.where(np.isnan(looks), scores, looks)
    blended = ((1.0 - weight) * scores + weight * looks).astype(np.float32)
    order = np.lexsort((ids, -blended))
    return ids[order], blended[order]
