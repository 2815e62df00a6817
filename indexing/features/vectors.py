"""Feature vectors as stored and compared: L2 normalisation and the float32 little-endian bytes of a Feature row.

Pure NumPy: the one place that says how a vector is written to ``Feature.vector`` (and an index's centre to
``LSHIndex.center``) and read back.
"""

from __future__ import annotations

import numpy as np

__all__ = ["VECTOR_DTYPE", "l2_normalize", "vector_from_bytes", "vector_to_bytes"]

VECTOR_DTYPE = "<f4"  # float32, little-endian: the same bytes on every machine


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Scale each row to unit L2 norm.

    Args:
        vectors: ``(n, dim)`` array.

    Returns:
        ``float32`` ``(n, dim)``; rows whose norm is 0 are returned as zeros rather than NaN.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def vector_to_bytes(vector: np.ndarray) -> bytes:
    """The stored form of a vector (or of a centre): its values as little-endian float32 bytes.

    Args:
        vector: Any array; it is flattened in C order.

    Returns:
        ``4 * vector.size`` bytes.
    """
    return np.asarray(vector, dtype=VECTOR_DTYPE).tobytes()


def vector_from_bytes(blob: bytes | memoryview, count: int = -1) -> np.ndarray:
    """Read back what :func:`vector_to_bytes` wrote.

    Args:
        blob: The stored bytes (a ``BinaryField`` value: bytes or memoryview).
        count: Number of values to read; -1 reads them all.

    Returns:
        A read-only little-endian float32 ``(count,)`` array viewing a copy of ``blob``.
    """
    return np.frombuffer(bytes(blob), dtype=VECTOR_DTYPE, count=count)
