from __future__ import annotations

import hashlib
import itertools
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from indexing.lsh.hashing import (
    FAMILIES,
    FamilySpec,
    ProjectionFamily,
    PStableFamily,
    SimHashFamily,
    encode_hash_values,
    family_from_table_params,
    family_params,
    fit_center,
    make_family,
    pack_bits,
    register_family,
    unregister_family,
)
from indexing.lsh.index import LshIndex
from indexing.lsh.projection import table_rng

REPO_ROOT = Path(__file__).resolve().parents[2]


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def _pairs_at_angle(rng: np.random.Generator, count: int, dim: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    first = _unit(rng.standard_normal((count, dim)))
    other = rng.standard_normal((count, dim))
    other -= np.sum(other * first, axis=1, keepdims=True) * first  # orthogonal to first
    second = math.cos(angle) * first + math.sin(angle) * _unit(other)
    return first, second


def _datar_collision_probability(distance: float, w: float) -> float:
    ratio = w / distance
    phi = 0.5 * (1.0 + math.erf(-ratio / math.sqrt(2.0)))  # Phi(-w/c)
    return 1.0 - 2.0 * phi - 2.0 / (math.sqrt(2.0 * math.pi) * ratio) * (1.0 - math.exp(-(ratio**2) / 2.0))


def _reference_encode(values: list[int]) -> int:
    """The documented key mixing, written with Python integers."""
    mask = (1 << 64) - 1
    key = 0xCBF29CE484222325
    for value in values:
        z = ((key ^ (value & mask)) + 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        key = z ^ (z >> 31)
    return key - (1 << 64) if key >= 1 << 63 else key


@pytest.mark.parametrize("angle", [math.pi / 6, math.pi / 3, math.pi / 2])
def test_simhash_collision_rate_matches_one_minus_angle_over_pi(angle: float) -> None:
    rng = np.random.default_rng(7)
    first, second = _pairs_at_angle(rng, count=200, dim=24, angle=angle)
    family = SimHashFamily(24, num_tables=500, hashes_per_table=1, seed=3)
    rate = np.mean(family.keys(first) == family.keys(second))  # 100,000 (pair, hyperplane) trials
    assert rate == pytest.approx(1.0 - angle / math.pi, abs=0.01)


@pytest.mark.parametrize("distance", [0.5, 2.0, 6.0])
def test_pstable_collision_rate_matches_datar_formula(distance: float) -> None:
    rng = np.random.default_rng(11)
    first = rng.standard_normal((200, 16))
    second = first + distance * _unit(rng.standard_normal((200, 16)))
    family = PStableFamily(16, num_tables=500, hashes_per_table=1, w=4.0, seed=5)
    rate = np.mean(family.hash_values(first) == family.hash_values(second))
    assert rate == pytest.approx(_datar_collision_probability(distance, 4.0), abs=0.01)


def test_pstable_hash_is_floor_of_shifted_projection() -> None:
    vectors = np.random.default_rng(0).standard_normal((5, 8))
    family = PStableFamily(8, num_tables=2, hashes_per_table=3, w=4.0, seed=1)
    expected = np.floor((np.einsum("nd,tkd->ntk", vectors, family.projections) + family.offsets) / 4.0)
    np.testing.assert_array_equal(family.hash_values(vectors), expected)
    assert np.all((family.offsets >= 0.0) & (family.offsets <= 4.0))


def test_simhash_key_packs_sign_bits_of_centred_vectors() -> None:
    vectors = np.random.default_rng(0).random((6, 8))  # non-negative, like post-ReLU features
    center = fit_center(vectors)
    family = SimHashFamily(8, num_tables=2, hashes_per_table=5, seed=2, center=center)
    bits = np.einsum("nd,tkd->ntk", vectors - center.astype(np.float64), family.projections) >= 0
    np.testing.assert_array_equal(family.keys(vectors), (bits * (1 << np.arange(5))).sum(axis=-1))


def test_centring_spreads_non_negative_data_over_buckets() -> None:
    vectors = _unit(np.random.default_rng(0).random((400, 32)))
    plain = SimHashFamily(32, num_tables=1, hashes_per_table=6, seed=0).keys(vectors)
    centred = SimHashFamily(32, num_tables=1, hashes_per_table=6, seed=0, center=fit_center(vectors)).keys(vectors)
    assert np.unique(centred).shape[0] > 2 * np.unique(plain).shape[0]


def test_encode_hash_values_follows_documented_mixing() -> None:
    rows = [[0], [1], [-1], [2**62], [0, 0, 0], [1, -2, 3], [-(2**63), 2**63 - 1, 5]]
    for row in rows:
        assert int(encode_hash_values(np.array(row, dtype=np.int64))) == _reference_encode(row)
    assert encode_hash_values(np.array([[1, 2], [2, 1]])).tolist() == [
        _reference_encode([1, 2]),
        _reference_encode([2, 1]),
    ]


def test_pack_bits_rejects_more_than_63_bits() -> None:
    with pytest.raises(ValueError, match="63"):
        pack_bits(np.zeros((2, 64), dtype=bool))


def test_keys_are_identical_in_a_fresh_process() -> None:
    script = (
        "import hashlib, numpy as np\n"
        "from indexing.lsh.hashing import make_family\n"
        "x = np.random.default_rng(1).standard_normal((50, 20)).astype(np.float32)\n"
        "for name in ('binary', 'real'):\n"
        "    f = make_family(name, 20, num_tables=3, hashes_per_table=7, w=2.0, seed=42, center=x.mean(0))\n"
        "    print(hashlib.sha256(f.keys(x).tobytes() + f.probe_keys(x[0], 5).tobytes()).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO_ROOT)}
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO_ROOT, env=env
    ).stdout.split()

    x = np.random.default_rng(1).standard_normal((50, 20)).astype(np.float32)
    expected = []
    for name in ("binary", "real"):
        family = make_family(name, 20, num_tables=3, hashes_per_table=7, w=2.0, seed=42, center=x.mean(0))
        expected.append(hashlib.sha256(family.keys(x).tobytes() + family.probe_keys(x[0], 5).tobytes()).hexdigest())
    assert output == expected


@pytest.mark.parametrize("name", ["binary", "real"])
def test_from_table_params_reproduces_keys_and_parameters(name: str) -> None:
    vectors = np.random.default_rng(2).standard_normal((40, 12))
    center = fit_center(vectors)
    family = make_family(name, 12, num_tables=4, hashes_per_table=6, w=1.5, seed=9, center=center)
    blobs = [family.table_params(table) for table in range(family.num_tables)]
    rebuilt = family_from_table_params(name, blobs, center=center)

    assert type(rebuilt) is type(family)
    assert isinstance(family, ProjectionFamily)
    assert isinstance(rebuilt, ProjectionFamily)
    assert (rebuilt.seed, rebuilt.num_tables, rebuilt.hashes_per_table, rebuilt.dim) == (9, 4, 6, 12)
    np.testing.assert_array_equal(rebuilt.projections, family.projections)
    np.testing.assert_array_equal(rebuilt.keys(vectors), family.keys(vectors))
    np.testing.assert_array_equal(rebuilt.probe_keys(vectors[3], 8), family.probe_keys(vectors[3], 8))


def test_from_table_params_rejects_tables_out_of_order_or_of_another_family() -> None:
    family = SimHashFamily(4, num_tables=2, hashes_per_table=3, seed=0)
    with pytest.raises(ValueError, match="table order"):
        SimHashFamily.from_table_params([family.table_params(1), family.table_params(0)])
    with pytest.raises(ValueError, match="'binary'"):
        PStableFamily.from_table_params([family.table_params(0)])


def test_adding_tables_keeps_the_earlier_tables() -> None:
    vectors = np.random.default_rng(3).standard_normal((10, 6))
    small = SimHashFamily(6, num_tables=2, hashes_per_table=8, seed=4).keys(vectors)
    large = SimHashFamily(6, num_tables=5, hashes_per_table=8, seed=4).keys(vectors)
    np.testing.assert_array_equal(large[:, :2], small)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hashes_per_table": 64}, r"hashes_per_table must be in \[1, 63\], got 64"),
        ({"hashes_per_table": 0}, "got 0"),
        ({"num_tables": 0}, "num_tables must be >= 1, got 0"),
        ({"seed": -1}, "seed must be >= 0, got -1"),
        ({"center": np.zeros(3)}, r"center must have shape \(8,\)"),
    ],
)
def test_simhash_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"num_tables": 2, "hashes_per_table": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        SimHashFamily(8, **arguments)  # type: ignore[arg-type]


def test_pstable_rejects_non_positive_width_and_unknown_family() -> None:
    with pytest.raises(ValueError, match="w must be a positive finite number, got 0"):
        PStableFamily(8, num_tables=1, hashes_per_table=2, w=0)
    with pytest.raises(ValueError, match="'hamming'"):
        make_family("hamming", 8, num_tables=1, hashes_per_table=2)


def test_keys_reject_wrong_dimension_and_nan() -> None:
    family = SimHashFamily(8, num_tables=1, hashes_per_table=2)
    with pytest.raises(ValueError, match=r"shape \(n, 8\)"):
        family.keys(np.zeros((3, 7)))
    with pytest.raises(ValueError, match="NaN"):
        family.keys(np.full((1, 8), np.nan))
    with pytest.raises(ValueError, match="probes must be >= 0, got -1"):
        family.probe_keys(np.zeros(8), -1)


def test_simhash_first_probe_flips_the_bit_with_the_smallest_margin() -> None:
    vector = np.random.default_rng(5).standard_normal(16)
    family = SimHashFamily(16, num_tables=3, hashes_per_table=10, seed=6)
    keys = family.probe_keys(vector, probes=4)
    margins = np.abs(family.projections @ vector)  # (tables, K)

    np.testing.assert_array_equal(keys[:, 0], family.keys(vector[np.newaxis])[0])
    np.testing.assert_array_equal(keys[:, 1], keys[:, 0] ^ (1 << np.argmin(margins, axis=1)))


def test_simhash_probes_visit_every_code_once_in_order_of_summed_margin() -> None:
    vector = np.random.default_rng(8).standard_normal(8)
    family = SimHashFamily(8, num_tables=2, hashes_per_table=5, seed=1)
    keys = family.probe_keys(vector, probes=1000)  # more than exist: capped at 2**5 - 1
    margins = np.abs(family.projections @ vector)

    assert keys.shape == (2, 32)
    for table in range(2):
        assert sorted(keys[table].tolist()) == list(range(32))
        flipped = keys[table] ^ keys[table, 0]
        costs = [sum(margins[table, bit] for bit in range(5) if code >> bit & 1) for code in flipped.tolist()]
        assert costs == sorted(costs)


def test_pstable_probes_follow_query_directed_order() -> None:
    vector = np.random.default_rng(9).standard_normal(6)
    family = PStableFamily(6, num_tables=2, hashes_per_table=3, w=2.0, seed=2)
    keys = family.probe_keys(vector, probes=100)  # capped at 3**3 - 1
    slots = (family.projections @ vector + family.offsets) / 2.0
    home = np.floor(slots)
    fraction = slots - home

    assert keys.shape == (2, 27)
    for table in range(2):
        score_of_key = {}
        for shift in itertools.product((-1, 0, 1), repeat=3):
            boundary = [2.0 * (fraction[table, i] if s < 0 else 1.0 - fraction[table, i]) for i, s in enumerate(shift)]
            key = int(encode_hash_values(home[table].astype(np.int64) + np.array(shift)))
            score_of_key[key] = sum(b**2 for b, s in zip(boundary, shift, strict=True) if s != 0)
        assert set(keys[table].tolist()) == set(score_of_key)
        scores = [score_of_key[key] for key in keys[table].tolist()]
        assert scores[0] == 0.0
        assert scores == sorted(scores)


def test_probe_keys_without_probes_are_the_home_keys() -> None:
    vectors = np.random.default_rng(4).standard_normal((5, 10)).astype(np.float32)
    for name in ("binary", "real"):
        family = make_family(name, 10, num_tables=3, hashes_per_table=4, w=1.0, seed=0, center=fit_center(vectors))
        batch = family.keys(vectors)
        for row, vector in enumerate(vectors):
            np.testing.assert_array_equal(family.probe_keys(vector)[:, 0], batch[row])
            assert family.probe_keys(vector).shape == (3, 1)


@pytest.mark.parametrize("name", ["binary", "real"])
def test_keys_do_not_depend_on_how_the_batch_is_split(name: str) -> None:
    vectors = np.random.default_rng(6).standard_normal((2 * 8192 + 5, 4))  # crosses the internal block size
    family = make_family(name, 4, num_tables=2, hashes_per_table=3, w=1.0, seed=3)
    whole = family.keys(vectors)
    np.testing.assert_array_equal(whole, np.concatenate([family.keys(vectors[:7]), family.keys(vectors[7:])]))
    np.testing.assert_array_equal(whole[-1], family.probe_keys(vectors[-1])[:, 0])


class AxisFamily(SimHashFamily):
    """A toy family: bit ``i`` is the sign of a sum of ``axes_per_hash`` random coordinates (its own parameter)."""

    family = "axis"

    def __init__(
        self,
        dim: int,
        *,
        num_tables: int,
        hashes_per_table: int,
        seed: int = 0,
        center: np.ndarray | None = None,
        axes_per_hash: int = 1,
    ) -> None:
        self._validate_common(dim, num_tables, hashes_per_table, seed, 63)
        projections = np.zeros((num_tables, hashes_per_table, dim))
        for table in range(num_tables):
            axes = table_rng(seed, table).integers(0, dim, (hashes_per_table, axes_per_hash))
            for position, chosen in enumerate(axes):
                projections[table, position, chosen] = 1.0
        self._setup(projections, seed=seed, center=center)


@pytest.fixture
def axis_family() -> Iterator[str]:
    register_family(
        "axis", FamilySpec(AxisFamily, "axis-aligned (toy)", "^", max_hashes=63, params={"axes_per_hash": 1})
    )
    yield "axis"
    unregister_family("axis")


def test_a_registered_family_builds_and_queries_an_index(axis_family: str) -> None:
    assert FAMILIES[axis_family].label == "axis-aligned (toy)"
    vectors = np.random.default_rng(8).standard_normal((60, 16))
    # w belongs to the "real" family: a sweep passing it to every family is not an error.
    family = make_family(axis_family, 16, num_tables=4, hashes_per_table=5, seed=2, axes_per_hash=2, w=1.0)
    assert isinstance(family, AxisFamily)
    assert int(np.count_nonzero(family.projections[0, 0])) <= 2
    index = LshIndex(family).fit(vectors)
    result = index.query(vectors[11], top_k=1)
    assert result.ids.tolist() == [11]
    rebuilt = family_from_table_params(axis_family, [family.table_params(t) for t in range(4)])
    np.testing.assert_array_equal(rebuilt.keys(vectors), family.keys(vectors))
    assert family_params(axis_family, axes_per_hash=3, w=2.0) == {"axes_per_hash": 3}


def test_family_params_are_the_registered_defaults_and_unknown_ones_are_refused() -> None:
    assert family_params("real") == {"w": 4.0}
    assert family_params("real", w=1.5) == {"w": 1.5}
    assert family_params("binary", w=1.5) == {}
    with pytest.raises(ValueError, match="unknown family parameter"):
        make_family("binary", 4, num_tables=1, hashes_per_table=2, width=3)
    with pytest.raises(ValueError, match="'nope'"):
        make_family("nope", 4, num_tables=1, hashes_per_table=2)
    with pytest.raises(ValueError, match="registered already"):
        register_family("real", FAMILIES["real"])
