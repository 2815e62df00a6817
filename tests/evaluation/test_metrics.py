from __future__ import annotations

import json
import math

import numpy as np
import pytest

from evaluation import metrics
from evaluation.metrics import (
    average_bucket_purity,
    average_precision,
    average_precision_from_ranking,
    bucket_purity,
    class_summary_to_dict,
    distractor_share,
    improvement_in_efficiency,
    improvement_in_efficiency_paper,
    mean_average_precision,
    pearson_correlation,
    per_class_ap,
    percentile_ms,
    precision_at_k,
    ranking_ap,
    recall_at_k,
    relevance_from_ids,
    time_queries,
)


def _reference_ap(relevance: np.ndarray, num_relevant: int) -> float:
    """Loop-based AP, the textbook definition, to check the vectorised one against."""
    hits, total = 0, 0.0
    for rank, relevant in enumerate(relevance, start=1):
        if relevant:
            hits += 1
            total += hits / rank
    return total / num_relevant


# --- average precision -----------------------------------------------------------------------------


def test_ap_rel_non_rel_with_two_relevant() -> None:
    assert average_precision(np.array([True, False, True]), 2) == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_ap_counts_relevant_item_missing_from_ranking_as_zero() -> None:
    assert average_precision(np.array([True, False, True]), 3) == pytest.approx((1 + 2 / 3) / 3)


def test_ap_is_zero_when_nothing_relevant_returned() -> None:
    assert average_precision(np.array([False, False]), 4) == 0.0


def test_ap_is_one_for_perfect_ranking() -> None:
    assert average_precision(np.array([True, True, False, False]), 2) == pytest.approx(1.0)


def test_ap_of_empty_ranking_is_zero() -> None:
    assert average_precision(np.zeros(0, dtype=bool), 5) == 0.0


def test_ranking_ap_compares_labels_with_query_label() -> None:
    assert ranking_ap(3, np.array([3, 1, 3]), 2) == pytest.approx(5 / 6)
    assert ranking_ap(3, np.array([3, 1, 3]), 3) == pytest.approx(5 / 9)


def test_ap_from_ranking_matrix_per_query() -> None:
    relevance = np.array([[True, False, True], [False, True, False], [False, False, False]])
    ap_values = average_precision_from_ranking(relevance, np.array([2, 1, 4]))
    assert ap_values.shape == (3,)
    assert ap_values == pytest.approx([5 / 6, 1 / 2, 0.0])


def test_ap_from_ranked_labels_with_padding_label() -> None:
    ranked_labels = np.array([[0, -1, -1], [2, 1, 1]])
    ap_values = average_precision_from_ranking(ranked_labels, np.array([1, 2]), query_labels=np.array([0, 1]))
    assert ap_values == pytest.approx([1.0, (1 / 2 + 2 / 3) / 2])


def test_mean_average_precision_averages_queries() -> None:
    relevance = np.array([[True, False, True], [False, True, False]])
    assert mean_average_precision(relevance, 2) == pytest.approx((5 / 6 + 1 / 4) / 2)


def test_vectorised_ap_matches_loop_reference() -> None:
    rng = np.random.default_rng(0)
    relevance = rng.random((50, 200)) < 0.1
    num_relevant = relevance.sum(axis=1) + rng.integers(1, 5, size=50)
    expected = [_reference_ap(row, int(r)) for row, r in zip(relevance, num_relevant, strict=True)]
    assert average_precision_from_ranking(relevance, num_relevant) == pytest.approx(expected)


def test_full_ranking_ap_for_800_queries_matches_the_loop_reference() -> None:
    # 800 full rankings of 20,000 items in one call (no Python loop over items): every row as the relevance-matrix
    # path computes it, and sampled rows as the textbook loop does.
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 250, size=(800, 20_000))
    query_labels = rng.integers(0, 250, size=800)
    relevance = labels == query_labels[:, None]
    num_relevant = relevance.sum(axis=1) + 1
    ap_values = average_precision_from_ranking(labels, num_relevant, query_labels=query_labels)
    assert ap_values.shape == (800,)
    assert ((ap_values >= 0) & (ap_values <= 1)).all()
    np.testing.assert_array_equal(ap_values, average_precision_from_ranking(relevance, num_relevant))
    sample = rng.choice(800, size=16, replace=False)
    expected = [_reference_ap(relevance[row], int(num_relevant[row])) for row in sample]
    assert ap_values[sample] == pytest.approx(expected)


@pytest.mark.parametrize("num_relevant", [0, -1])
def test_ap_rejects_non_positive_num_relevant(num_relevant: int) -> None:
    with pytest.raises(ValueError, match=str(num_relevant)):
        average_precision(np.array([False]), num_relevant)


def test_ap_rejects_more_relevant_items_than_num_relevant() -> None:
    with pytest.raises(ValueError, match="num_relevant=1"):
        average_precision(np.array([True, True]), 1)


def test_ap_rejects_non_boolean_relevance() -> None:
    with pytest.raises(ValueError, match="int"):
        average_precision_from_ranking(np.array([[1, 0]]), 1)


def test_ap_rejects_3d_input() -> None:
    with pytest.raises(ValueError, match=r"\(1, 1, 2\)"):
        average_precision_from_ranking(np.zeros((1, 1, 2), dtype=bool), 1)


def test_ap_rejects_mismatched_query_labels() -> None:
    with pytest.raises(ValueError, match="query_labels"):
        average_precision_from_ranking(np.array([[0, 1]]), 1, query_labels=np.array([0, 1]))


def test_ap_rejects_mismatched_num_relevant() -> None:
    with pytest.raises(ValueError, match="num_relevant"):
        average_precision_from_ranking(np.zeros((2, 3), dtype=bool), np.array([1, 2, 3]))


def test_mean_average_precision_rejects_no_queries() -> None:
    with pytest.raises(ValueError, match="at least one query"):
        mean_average_precision(np.zeros((0, 3), dtype=bool), 1)


# --- relevance from an id matrix -------------------------------------------------------------------


def test_relevance_from_ids_drops_query_and_shifts_ranks() -> None:
    item_labels = np.array([0, 0, 1, 1, 0])
    ranked_ids = np.array([[0, 1, 2, 4], [3, 2, 0, -1]])
    relevance = relevance_from_ids(ranked_ids, item_labels, np.array([0, 1]), query_ids=np.array([0, 2]))
    assert relevance.tolist() == [[True, False, True, False], [True, False, False, False]]
    # Query 0 has R = 2 (items 1 and 4): AP = (1/1 + 2/3) / 2.
    assert average_precision_from_ranking(relevance, np.array([2, 1]))[0] == pytest.approx(5 / 6)


def test_relevance_from_ids_without_query_ids_keeps_rows() -> None:
    relevance = relevance_from_ids(np.array([1, -1, 0]), np.array([0, 1]), np.array([1]))
    assert relevance.tolist() == [[True, False, False]]


def test_relevance_from_ids_rejects_out_of_range_id() -> None:
    with pytest.raises(ValueError, match="got 7"):
        relevance_from_ids(np.array([[7]]), np.array([0, 1]), np.array([0]))


# --- precision@k, recall@k, distractors ------------------------------------------------------------


def test_precision_at_k() -> None:
    assert precision_at_k(np.array([True, False, True, False]), 2) == pytest.approx(0.5)
    # A ranking shorter than k counts the empty slots as misses.
    assert precision_at_k(np.array([True, False, True, False]), 5) == pytest.approx(2 / 5)
    assert precision_at_k(np.array([[True, True], [False, True]]), 2) == pytest.approx(0.75)


def test_recall_at_k_against_exact_scan() -> None:
    assert recall_at_k(np.array([1, 2, 3, 9]), np.array([1, 3, 5, 2]), 3) == pytest.approx(2 / 3)


def test_recall_at_k_counts_duplicates_and_padding_once() -> None:
    assert recall_at_k(np.array([[1, 1, -1]]), np.array([[1, 2, 3]]), 3) == pytest.approx(1 / 3)


def test_recall_at_k_averages_queries_and_allows_short_rankings() -> None:
    returned = np.array([[1, 2], [7, 8]])
    exact = np.array([[2, 1, 0], [8, 6, 5]])
    assert recall_at_k(returned, exact, 2) == pytest.approx((1.0 + 0.5) / 2)


def test_recall_at_k_rejects_short_exact_ranking() -> None:
    with pytest.raises(ValueError, match="k=3"):
        recall_at_k(np.array([1, 2, 3]), np.array([1, 2]), 3)


@pytest.mark.parametrize("k", [0, -2])
def test_cutoffs_reject_non_positive_k(k: int) -> None:
    with pytest.raises(ValueError, match=str(k)):
        precision_at_k(np.array([True]), k)
    with pytest.raises(ValueError, match=str(k)):
        recall_at_k(np.array([1]), np.array([1]), k)
    with pytest.raises(ValueError, match=str(k)):
        distractor_share(np.array([True]), k)


def test_distractor_share_of_top_k() -> None:
    is_photo = np.array([True, False, False, True])
    assert distractor_share(is_photo, 2) == pytest.approx(0.5)
    assert distractor_share(is_photo, 3) == pytest.approx(1 / 3)
    # Only the items actually returned count.
    assert distractor_share(is_photo, 10) == pytest.approx(0.5)
    assert distractor_share(np.array([[True, True], [False, True]]), 1) == pytest.approx(0.5)


def test_distractor_share_rejects_empty_ranking() -> None:
    with pytest.raises(ValueError, match="no ranked items"):
        distractor_share(np.zeros(0, dtype=bool), 3)


# --- improvement in efficiency ----------------------------------------------------------------------


def test_ie_counts_each_candidate_once() -> None:
    assert improvement_in_efficiency(1000, np.array([1, 2, 2, 3])) == pytest.approx(1000 / 3)
    assert improvement_in_efficiency(1000, 250) == pytest.approx(4.0)


def test_paper_ie_counts_candidate_once_per_table() -> None:
    assert improvement_in_efficiency_paper(1000, np.array([1, 2, 2, 3])) == pytest.approx(250.0)
    assert improvement_in_efficiency_paper(1000, 250) == pytest.approx(4.0)


def test_paper_ie_falls_below_one_with_many_tables_and_big_buckets() -> None:
    # 5 tables each return the same 40 of 100 items: 200 distance computations as the paper counted them.
    candidates = np.tile(np.arange(40), 5)
    assert improvement_in_efficiency_paper(100, candidates) == pytest.approx(0.5)
    assert improvement_in_efficiency(100, candidates) == pytest.approx(2.5)


def test_ie_is_infinite_without_candidates() -> None:
    assert improvement_in_efficiency(10, 0) == math.inf
    assert improvement_in_efficiency_paper(10, np.array([], dtype=np.int64)) == math.inf


@pytest.mark.parametrize(("collection_size", "candidates", "message"), [(0, 1, "got 0"), (10, -3, "got -3")])
def test_ie_rejects_bad_counts(collection_size: int, candidates: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        improvement_in_efficiency(collection_size, candidates)
    with pytest.raises(ValueError, match=message):
        improvement_in_efficiency_paper(collection_size, candidates)


def test_ie_rejects_2d_candidates() -> None:
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        improvement_in_efficiency(10, np.zeros((2, 2), dtype=np.int64))


# --- bucket purity ---------------------------------------------------------------------------------


def test_bucket_purity_is_majority_share() -> None:
    assert bucket_purity(np.array([1, 1, 2, 3])) == pytest.approx(0.5)
    assert bucket_purity(np.array([7])) == pytest.approx(1.0)


def test_average_bucket_purity_mean_and_std() -> None:
    mean, std = average_bucket_purity([np.array([1, 1, 2, 3]), np.array([4]), np.array([5, 5, 6])])
    purities = [0.5, 1.0, 2 / 3]
    assert mean == pytest.approx(13 / 18)
    assert std == pytest.approx(math.sqrt(sum((p - 13 / 18) ** 2 for p in purities) / 3))


def test_bucket_purity_rejects_empty_bucket() -> None:
    with pytest.raises(ValueError, match=r"\(0,\)"):
        bucket_purity(np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="at least one bucket"):
        average_bucket_purity([])


# --- Pearson correlation ---------------------------------------------------------------------------


def test_pearson_correlation_known_values() -> None:
    assert pearson_correlation(np.array([1, 2, 3]), np.array([1, 3, 2])) == pytest.approx(0.5)
    assert pearson_correlation([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert pearson_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_pearson_correlation_matches_numpy() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.random(250), rng.random(250)
    assert pearson_correlation(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        ([1.0], [2.0], "at least 2 points, got 1"),
        ([1.0, 1.0, 1.0], [1.0, 2.0, 3.0], "zero variance"),
        ([1.0, 2.0], [1.0, 2.0, 3.0], r"\(2,\) and \(3,\)"),
        ([1.0, math.nan], [1.0, 2.0], "finite"),
    ],
)
def test_pearson_correlation_rejects_degenerate_input(x: list[float], y: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pearson_correlation(x, y)


# --- per-class summary (Algorithm 1) ---------------------------------------------------------------


def test_per_class_ap_summarises_each_class() -> None:
    summaries = per_class_ap(
        np.array([0.2, 1.0, 0.8, 0.5, 0.0]),
        np.array([0, 1, 0, 0, 1]),
        np.array([10, 20, 11, 12, 21]),
    )
    assert [s.label for s in summaries] == [0, 1]
    airplane, dog = summaries
    assert (airplane.label, airplane.num_queries) == (0, 3)
    assert (airplane.mean_ap, airplane.min_ap, airplane.max_ap, airplane.range_ap, airplane.std_ap) == pytest.approx(
        (0.5, 0.2, 0.8, 0.6, math.sqrt(0.06))
    )
    assert (airplane.best_query_id, airplane.worst_query_id) == (11, 10)
    assert (dog.mean_ap, dog.range_ap, dog.std_ap) == pytest.approx((0.5, 1.0, 0.5))
    assert (dog.best_query_id, dog.worst_query_id) == (20, 21)


def test_per_class_ap_single_query_class_has_zero_spread() -> None:
    (summary,) = per_class_ap([0.4], [3], [99])
    assert (summary.range_ap, summary.std_ap) == (0.0, 0.0)
    assert summary.best_query_id == summary.worst_query_id == 99


def test_per_class_ap_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(2,\), \(1,\), \(2,\)"):
        per_class_ap([0.1, 0.2], [0], [1, 2])
    with pytest.raises(ValueError, match="1.5"):
        per_class_ap([1.5], [0], [1])
    with pytest.raises(ValueError, match="at least one query"):
        per_class_ap([], np.array([], dtype=np.int64), [])


def test_class_summary_to_dict_has_paper_keys_and_is_json() -> None:
    (summary,) = per_class_ap([0.0125, 0.7779, 0.5], [0, 0, 0], [5, 6, 7])
    row = class_summary_to_dict(summary, "airplane")
    assert list(row)[:7] == ["class", "label", "mAP", "min AP", "max AP", "max-min range", "std"]
    assert row["class"] == "airplane"
    assert row["label"] == 0
    assert row["max-min range"] == pytest.approx(0.7779 - 0.0125)
    assert (row["best query id"], row["worst query id"]) == (6, 5)
    assert json.loads(json.dumps(row)) == row


def test_class_summary_to_dict_looks_up_name_by_label() -> None:
    (summary,) = per_class_ap([0.3], [2], [1])
    assert class_summary_to_dict(summary, {2: "dog"})["class"] == "dog"
    with pytest.raises(ValueError, match="label 2"):
        class_summary_to_dict(summary, {0: "airplane"})


# --- timing ----------------------------------------------------------------------------------------


def test_time_queries_warms_up_then_times_each_query() -> None:
    calls: list[str] = []
    times = time_queries(calls.append, ["a", "b", "c"], warmup=2)
    assert calls == ["a", "b", "a", "b", "c"]
    assert times.shape == (3,)
    assert times.dtype == np.float64
    assert (times >= 0).all()


def test_time_queries_measures_with_perf_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter([1.0, 1.5, 2.0, 2.25])
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(ticks))
    assert time_queries(lambda q: q, [1, 2], warmup=0).tolist() == [0.5, 0.25]


def test_time_queries_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="got 0"):
        time_queries(print, [])
    with pytest.raises(ValueError, match="-1"):
        time_queries(print, [1], warmup=-1)


def test_percentile_ms() -> None:
    times = np.array([0.001, 0.002, 0.003])
    assert percentile_ms(times, 50) == pytest.approx(2.0)
    assert percentile_ms(times, 100) == pytest.approx(3.0)
    assert percentile_ms(times, 95) == pytest.approx(2.9)


def test_percentile_ms_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="101"):
        percentile_ms([0.1], 101)
    with pytest.raises(ValueError, match=r"\(0,\)"):
        percentile_ms([], 50)
    with pytest.raises(ValueError, match="-0.1"):
        percentile_ms([-0.1], 50)
