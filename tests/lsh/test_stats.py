from __future__ import annotations

import numpy as np
import pytest

from indexing.lsh.stats import BucketStats, bucket_stats


def test_bucket_stats_match_a_hand_computed_example() -> None:
    # table 0: bucket 1 = {a, a, b}, bucket 2 = {b, b}, bucket 3 = {a}
    # table 1: bucket 1 = {a, a, b, b} (another bucket than table 0's key 1), bucket 7 = {b, a}
    keys = np.array([[1, 1], [1, 1], [1, 1], [2, 1], [2, 7], [3, 7]])
    labels = np.array(["a", "a", "b", "b", "b", "a"])
    sizes = np.array([3, 2, 1, 4, 2])
    purities = np.array([2 / 3, 1, 1, 1 / 2, 1 / 2])

    stats = bucket_stats(keys, labels)

    assert (stats.num_buckets, stats.num_items) == (5, 12)
    assert stats.avg_items_per_bucket == pytest.approx(2.4)
    assert stats.std_items_per_bucket == pytest.approx(np.sqrt(1.04))
    assert stats.avg_purity == pytest.approx(11 / 15)
    assert stats.std_purity == pytest.approx(purities.std())
    assert stats.std_items_per_bucket == pytest.approx(sizes.std())


def test_bucket_stats_of_pure_singletons() -> None:
    stats = bucket_stats(np.arange(6).reshape(3, 2), np.array([0, 1, 2]))
    assert stats == BucketStats(
        num_buckets=6, num_items=6, avg_items_per_bucket=1.0, std_items_per_bucket=0.0, avg_purity=1.0, std_purity=0.0
    )


def test_bucket_stats_rejects_mismatched_labels() -> None:
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        bucket_stats(np.zeros((2, 3), dtype=np.int64), np.zeros(3))
