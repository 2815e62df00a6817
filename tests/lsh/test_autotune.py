"""autotune: its recall and candidate counts against an independent oracle (LshIndex queries), and its choice."""

from __future__ import annotations

import numpy as np
import pytest

from indexing.lsh.autotune import PROBE_STEPS, autotune, default_grid
from indexing.lsh.hashing import fit_center, make_family
from indexing.lsh.index import ExactIndex, LshIndex


def _clustered(n: int = 600, dim: int = 32, clusters: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    vectors = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("family", ["binary", "real"])
def test_probe_sequences_are_prefixes(family: str) -> None:
    vectors = _clustered()
    hasher = make_family(family, 32, num_tables=4, hashes_per_table=8, w=1.0, seed=3, center=fit_center(vectors))
    for query in vectors[:20]:
        deepest = hasher.probe_keys(query, PROBE_STEPS[-1])
        for probes in PROBE_STEPS:
            assert np.array_equal(hasher.probe_keys(query, probes), deepest[:, : 1 + probes])


def test_measured_recall_and_candidates_match_lsh_index_queries() -> None:
    vectors = _clustered()
    result = autotune(vectors, grid=[(4, 8), (8, 10)], sample=60, target_recall=1.0, seed=5)
    rng = np.random.default_rng(5)
    rows = np.sort(rng.choice(len(vectors), size=60, replace=False))  # the sample autotune drew
    exact = ExactIndex().fit(vectors)
    for trial in result.trials:
        hasher = make_family(
            "binary",
            32,
            num_tables=trial.num_tables,
            hashes_per_table=trial.hashes_per_table,
            seed=5,
            center=fit_center(vectors),
        )
        index = LshIndex(hasher).fit(vectors)
        recalls, candidates = [], []
        for row in rows:
            truth = [i for i in exact.query(vectors[row], 11).ids if i != row][:10]
            answer = index.query(vectors[row], top_k=len(vectors), probes=trial.probes)
            found = [i for i in answer.ids if i != row]
            candidates.append(len(found))
            recalls.append(len(set(found[:10]) & set(truth)) / 10)
        assert trial.recall == pytest.approx(np.mean(recalls))
        assert trial.candidates == pytest.approx(np.mean(candidates))


def test_chooses_the_cheapest_configuration_that_meets_the_target() -> None:
    vectors = _clustered()
    result = autotune(vectors, target_recall=0.9, sample=80)
    assert result.met
    assert result.chosen.recall >= 0.9
    meeting = [t for t in result.trials if t.recall >= 0.9]
    assert result.chosen.cost == min(t.cost for t in meeting)
    assert result.as_dict()["ie"] == pytest.approx(len(vectors) / result.chosen.candidates, abs=0.01)


def test_an_unreachable_target_returns_the_best_recall_and_says_so() -> None:
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((300, 64)).astype(np.float32)  # no structure: hashing cannot find the neighbours
    result = autotune(noise, grid=[(1, 20)], target_recall=1.0, sample=30)
    assert not result.met
    assert result.chosen.recall == max(t.recall for t in result.trials)


def test_grid_grows_with_the_collection() -> None:
    assert max(k for _, k in default_grid(1_000_000)) > max(k for _, k in default_grid(1_000))
    with pytest.raises(ValueError, match="at least 2"):
        autotune(np.ones((1, 4), np.float32))
    with pytest.raises(ValueError, match="target_recall"):
        autotune(_clustered(), target_recall=0.0)


def test_a_large_collection_counts_candidates_on_a_sample_and_recall_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    from indexing.lsh import autotune as module

    vectors = _clustered(n=1500)
    grid = [(8, 8), (16, 10)]
    exact = autotune(vectors, grid=grid, sample=60, seed=2)
    monkeypatch.setattr(module, "COUNT_SAMPLE", 500)  # 1,500 rows: now counted on a third of them
    sampled = autotune(vectors, grid=grid, sample=60, seed=2)
    for full, estimate in zip(exact.trials, sampled.trials, strict=True):
        assert (estimate.num_tables, estimate.hashes_per_table, estimate.probes) == (
            full.num_tables,
            full.hashes_per_table,
            full.probes,
        )
        assert estimate.recall == full.recall  # recall is never estimated
        assert estimate.candidates == pytest.approx(full.candidates, rel=0.25)
        assert estimate.candidates != full.candidates  # it was an estimate
