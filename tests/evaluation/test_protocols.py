"""The relevance protocols' maths against brute force (no database)."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.protocols import Look, expand_queries, lsh_scores, scan_scores, tuned_index


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((4, 16))
    labels = np.repeat(np.array(["a", "b", "c", "d"]), 30)
    gallery = centres[np.repeat(np.arange(4), 30)] + 0.9 * rng.standard_normal((120, 16))
    query_labels = np.array(["a", "b", "c", "d"] * 5)
    queries = centres[np.tile(np.arange(4), 5)] + 0.9 * rng.standard_normal((20, 16))
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return unit(queries), query_labels, unit(gallery), labels


def _brute(
    queries: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray, labels: np.ndarray, look: Look | None = None
) -> tuple:
    aps, p10, hit1 = [], [], []
    for number, (q, label) in enumerate(zip(queries, query_labels, strict=True)):
        order = sorted(range(len(gallery)), key=lambda g: (-float(q @ gallery[g]), g))
        if look is not None:  # the first `depth` by the blend written out, then the rest as they were
            w, own = look.weight, look.queries[number]
            blend = {g: (1 - w) * float(q @ gallery[g]) + w * float(own @ look.gallery[g]) for g in order[: look.depth]}
            order = sorted(blend, key=lambda g: (-blend[g], g)) + order[look.depth :]
        relevant = [labels[g] == label for g in order]
        hits = np.cumsum(relevant)
        aps.append(sum(hits[i] / (i + 1) for i, r in enumerate(relevant) if r) / sum(relevant))
        p10.append(np.mean(relevant[:10]))
        hit1.append(relevant[0])
    return np.mean(aps), np.mean(p10), np.mean(hit1)


def test_scan_scores_equal_brute_force() -> None:
    queries, query_labels, gallery, labels = _data()
    scores = scan_scores(queries, query_labels, gallery, labels)
    assert (scores.map, scores.p10, scores.hit1) == pytest.approx(_brute(queries, query_labels, gallery, labels))
    assert scores.candidates == 120


def test_an_index_probing_everything_scores_as_the_scan() -> None:
    queries, query_labels, gallery, labels = _data(1)
    index, tuning = tuned_index(gallery, target_recall=0.9)
    assert tuning.chosen.recall >= 0.9
    scan = scan_scores(queries, query_labels, gallery, labels)
    everything = lsh_scores(index, index.family.max_probes, queries, query_labels, labels, depth=120)
    assert (everything.map, everything.p10, everything.hit1) == pytest.approx((scan.map, scan.p10, scan.hit1))
    fewer = lsh_scores(index, 0, queries, query_labels, labels)
    assert fewer.candidates <= everything.candidates
    assert fewer.map <= everything.map + 1e-9


def test_query_expansion_moves_the_query_towards_its_neighbours() -> None:
    queries, _, gallery, _ = _data(2)
    top = np.argsort(-(queries @ gallery.T), axis=1)[:, :3]
    expanded = expand_queries(queries, gallery, top, alpha=1.0)
    manual = queries + np.einsum(
        "qm,qmd->qd", np.maximum(np.take_along_axis(queries @ gallery.T, top, 1), 0), gallery[top]
    )
    assert np.allclose(expanded, manual / np.linalg.norm(manual, axis=1, keepdims=True), atol=1e-6)
    with pytest.raises(ValueError, match="no query"):
        scan_scores(queries[:0], np.array([]), gallery, np.array(["a"] * len(gallery)))


def test_a_candidate_floor_probes_further_as_a_served_search_does() -> None:
    queries, query_labels, gallery, labels = _data(3)
    index, _ = tuned_index(gallery, target_recall=0.5)
    plain = lsh_scores(index, 0, queries, query_labels, labels)
    floored = lsh_scores(index, 0, queries, query_labels, labels, min_candidates=60)
    assert floored.candidates >= 60  # every query probed on until 60 candidates (all 120 can be reached)
    assert floored.candidates >= plain.candidates


def test_the_look_tie_break_scores_as_brute_force_through_the_scan_and_the_index() -> None:
    queries, query_labels, gallery, labels = _data(3)
    second_queries, _, second_gallery, _ = _data(4)  # another space, standing in for the base vectors
    look = Look(second_queries, second_gallery, weight=0.5, depth=15)

    scan = scan_scores(queries, query_labels, gallery, labels, look=look)
    plain = scan_scores(queries, query_labels, gallery, labels)
    index, _ = tuned_index(gallery, target_recall=0.9)
    everything = lsh_scores(index, index.family.max_probes, queries, query_labels, labels, depth=120, look=look)

    expected = _brute(queries, query_labels, gallery, labels, look)
    assert (scan.map, scan.p10, scan.hit1) == pytest.approx(expected)
    assert (everything.map, everything.p10, everything.hit1) == pytest.approx(expected)
    assert (scan.map, scan.p10) != pytest.approx((plain.map, plain.p10))  # the look did re-order
