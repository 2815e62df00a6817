"""Bucket statistics of a built index: every column of the paper's tables in section 5."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BucketStats", "bucket_stats"]


@dataclass(frozen=True)
class BucketStats:
    """Statistics over all buckets of all tables.

    A bucket is a distinct ``(table, key)`` pair, as in the paper (192 buckets for L=3, K=6 SimHash
    = 3 tables x 64 codes). Standard deviations are population ones (``ddof=0``).

    Attributes:
        num_buckets: non-empty buckets over all tables.
        num_items: entries over all tables, ``n * num_tables`` (the paper's "NR OF ITEMS").
        avg_items_per_bucket: ``num_items / num_buckets``.
        std_items_per_bucket: standard deviation of the bucket sizes.
        avg_purity: mean over buckets of (size of the bucket's majority class / bucket size).
        std_purity: standard deviation of that purity over buckets.
    """

    num_buckets: int
    num_items: int
    avg_items_per_bucket: float
    std_items_per_bucket: float
    avg_purity: float
    std_purity: float


def bucket_stats(keys: np.ndarray, labels: np.ndarray) -> BucketStats:
    """Compute bucket statistics from an index's key matrix and the items' class labels.

    Args:
        keys: int64 array ``(n, num_tables)``: ``keys[j, t]`` is item ``j``'s bucket key in table ``t``
            (``family.keys(vectors)`` or ``LshIndex.bucket_keys``).
        labels: array ``(n,)`` of class labels of any sortable dtype (ints or strings); give
            distractor images their own label.

    Returns:
        The :class:`BucketStats`.

    Raises:
        ValueError: if the shapes disagree or the index is empty.
    """
    keys = np.asarray(keys)
    labels = np.asarray(labels)
    if keys.ndim != 2 or keys.shape[0] == 0 or keys.shape[1] == 0:
        raise ValueError(f"keys must have shape (n, num_tables) with n, num_tables >= 1, got shape {keys.shape}")
    if labels.shape != (keys.shape[0],):
        raise ValueError(f"labels must have shape ({keys.shape[0]},), got shape {labels.shape}")
    _, label_codes = np.unique(labels, return_inverse=True)
    label_codes = label_codes.reshape(-1).astype(np.int64)

    sizes: list[np.ndarray] = []
    majorities: list[np.ndarray] = []
    for table in range(keys.shape[1]):
        table_keys = keys[:, table].astype(np.int64)
        order = np.lexsort((label_codes, table_keys))  # by key, then label
        sorted_keys, sorted_labels = table_keys[order], label_codes[order]
        # Runs of equal (key, label): the class counts inside each bucket.
        run_starts = np.flatnonzero(
            np.concatenate(([True], (sorted_keys[1:] != sorted_keys[:-1]) | (sorted_labels[1:] != sorted_labels[:-1])))
        )
        run_counts = np.diff(np.append(run_starts, sorted_keys.shape[0]))
        run_keys = sorted_keys[run_starts]
        # Runs are grouped by key; the first run of each key starts a bucket.
        bucket_starts = np.flatnonzero(np.concatenate(([True], run_keys[1:] != run_keys[:-1])))
        sizes.append(np.add.reduceat(run_counts, bucket_starts))
        majorities.append(np.maximum.reduceat(run_counts, bucket_starts))

    bucket_sizes = np.concatenate(sizes).astype(np.float64)
    purity = np.concatenate(majorities) / bucket_sizes
    return BucketStats(
        num_buckets=int(bucket_sizes.shape[0]),
        num_items=int(keys.shape[0] * keys.shape[1]),
        avg_items_per_bucket=float(bucket_sizes.mean()),
        std_items_per_bucket=float(bucket_sizes.std()),
        avg_purity=float(purity.mean()),
        std_purity=float(purity.std()),
    )
