"""The quantile sketch's accuracy guarantee, checked against exact nearest-rank percentiles."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from backend.core.sketch import (
    ALPHA,
    GAMMA,
    MAX_INDEX,
    MAX_TRACKED,
    RankedBins,
    Sketch,
    bin_key,
    bin_value,
    nearest_rank,
    parse_key,
    quantiles_of,
)

QS = (0.5, 0.95, 0.99)
# Float slack on top of ALPHA: the bound is attained at a bin's lower edge, and log/exp round.
TOL = ALPHA * (1 + 1e-9)


def exact(sorted_xs: np.ndarray, q: float) -> float:
    """The nearest-rank percentile, as numpy computes it (an oracle independent of our code)."""
    return float(np.quantile(sorted_xs, q, method="inverted_cdf"))


def rel_err(est: float, true: float) -> float:
    if true == 0.0:
        return 0.0 if est == 0.0 else math.inf
    return abs(est - true) / abs(true)


def sketch_of(xs) -> Sketch:
    s = Sketch()
    for x in xs:
        s.add(float(x))
    return s


def datasets():
    rng = np.random.default_rng(20260318)
    n = 100_000
    lognormal = rng.lognormal(mean=5.0, sigma=1.5, size=n)
    pareto = (rng.pareto(1.2, size=n) + 1.0) * 3.0
    mixed = np.concatenate(
        [
            -rng.lognormal(2.0, 2.0, size=n // 4),
            np.zeros(n // 10),
            rng.uniform(-1e-10, 1e-10, size=n // 20),  # inside the zero bin
            rng.lognormal(0.0, 3.0, size=n - n // 4 - n // 10 - n // 20),
        ]
    )
    rng.shuffle(mixed)
    ints = rng.integers(1, 2000, size=n).astype(float)  # many exact ties
    return {"lognormal": lognormal, "pareto": pareto, "mixed": mixed, "ints": ints}


DATA = datasets()


@pytest.mark.parametrize("name", sorted(DATA))
def test_quantiles_within_alpha_of_exact_nearest_rank(name):
    xs = DATA[name]
    s = sketch_of(xs)
    assert s.count == len(xs)
    ordered = np.sort(xs)
    for q in (*QS, 0.0, 0.1, 0.25, 0.75, 0.999, 1.0):
        true = exact(ordered, q)
        est = s.quantile(q)
        if abs(true) < 1e-9:
            assert est == 0.0, (q, true, est)
        else:
            assert rel_err(est, true) <= TOL, (name, q, true, est)
            assert math.copysign(1, est) == math.copysign(1, true)


def test_quantiles_matches_quantile_one_by_one():
    s = sketch_of(DATA["mixed"][:5000])
    qs = (0.99, 0.0, 0.5, 0.95, 1.0, 0.5)
    assert s.quantiles(qs) == [s.quantile(q) for q in qs]


@pytest.mark.parametrize("name", sorted(DATA))
def test_merge_equals_sketch_of_concatenation(name):
    xs = DATA[name]
    a, b = xs[:37_123], xs[37_123:]
    merged = sketch_of(a)
    merged.merge_bins(sketch_of(b).bins)
    whole = sketch_of(xs)
    assert merged == whole
    assert merged.bins == whole.bins and merged.count == whole.count
    assert merged.quantiles(QS) == whole.quantiles(QS)


def test_merge_is_order_independent_and_counts_bins_from_redis_strings():
    xs = DATA["pareto"][:3000]
    parts = [sketch_of(xs[i::3]) for i in range(3)]
    forward, backward = Sketch(), Sketch()
    for p in parts:
        forward.merge(p)
    for p in reversed(parts):
        # what a Redis hash read gives back: counts as bytes-decoded text
        backward.merge_bins({k: str(n) for k, n in p.bins.items()})
    assert forward == backward == sketch_of(xs)


def test_empty_sketch_and_bad_q():
    s = Sketch()
    assert s.quantile(0.5) is None
    assert s.quantiles(QS) == [None, None, None]
    s.add(1.0)
    for q in (-0.01, 1.01, math.nan):
        with pytest.raises(ValueError):
            s.quantile(q)


def test_add_with_multiplicity_equals_repeated_adds():
    a, b = Sketch(), Sketch()
    a.add(42.0, 5)
    a.add(-3.0, 2)
    for _ in range(5):
        b.add(42.0)
    b.add(-3.0)
    b.add(-3.0)
    assert a == b and a.count == 7
    assert a.quantile(0.0) < 0 < a.quantile(1.0)


def test_small_sample_ranks_are_exact_bins():
    xs = [-100.0, -1.0, 0.0, 0.5, 3.0, 1000.0]
    s = sketch_of(xs)
    for rank, true in enumerate(xs):
        q = rank / (len(xs) - 1)
        assert rel_err(s.quantile(q), true) <= TOL, (q, true)


# --- bins ------------------------------------------------------------------------------------------
def test_bin_key_format_and_zero_band():
    assert bin_key(0.0) == bin_key(-0.0) == bin_key(9.99e-10) == bin_key(-9.99e-10) == "z"
    assert bin_key(1e-9).startswith("p")
    assert bin_key(-1e-9).startswith("n")
    assert bin_key(1.0) == "p0"
    assert bin_key(-1.0) == "n0"
    assert bin_value("z") == 0.0
    rng = np.random.default_rng(1)
    for x in rng.lognormal(0, 20, size=2000):
        for signed in (float(x), -float(x)):
            key = bin_key(signed)
            assert re.fullmatch(r"[pn]-?\d+|z", key)
            if 1e-9 <= abs(signed) <= MAX_TRACKED:  # beyond: the edge bin (bounded sketches)
                assert rel_err(bin_value(key), signed) <= TOL


def test_bin_edges():
    # Bin i holds (gamma**(i-1), gamma**i]; check just inside both edges.
    for i in (-500, -3, 1, 2, 250, MAX_INDEX):
        lo, hi = GAMMA ** (i - 1), GAMMA**i
        assert bin_key(lo * (1 + 1e-9)) == f"p{i}"
        assert bin_key(hi * (1 - 1e-9)) == f"p{i}"
        assert bin_key(-hi * (1 - 1e-9)) == f"n{i}"
        rep = bin_value(f"p{i}")
        assert lo < rep < hi
        assert bin_value(f"n{i}") == -rep


def test_bin_value_of_the_largest_floats_is_finite():
    for x in (1.7e308, -1.7e308, 5e-324 * 1e15):
        key = bin_key(x)
        assert math.isfinite(bin_value(key))


def test_bin_key_rejects_nan_and_parse_key_rejects_garbage():
    with pytest.raises(ValueError):
        bin_key(math.nan)
    for bad in ("", "q1", "p", "px", "z1"):
        with pytest.raises(ValueError):
            parse_key(bad)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # The sample: p95 = p99 = 1000 by nearest rank (ceil(0.95 * 6) = 6th value);
        # the old floor(q * (n - 1)) rank answered ~500.
        ([100, 200, 300, 400, 500, 1000], {0.5: 300, 0.95: 1000, 0.99: 1000}),
        ([5], {0.5: 5, 0.95: 5, 0.99: 5}),
        ([1, 2], {0.5: 1, 0.95: 2, 0.99: 2}),
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], {0.5: 5, 0.95: 10, 0.99: 10}),
    ],
)
def test_small_samples_follow_nearest_rank(values, expected):
    sketch = sketch_of(values)
    xs = np.sort(np.array(values, dtype=float))
    for q, want in expected.items():
        assert exact(xs, q) == want  # the definition, as numpy has it
        assert rel_err(sketch.quantile(q), want) <= TOL, (q, sketch.quantile(q))


def test_nearest_rank_matches_numpy_for_every_small_n():
    for n in range(1, 300):
        xs = np.arange(n, dtype=float)
        for q in (0.0, *QS, 1.0):
            assert nearest_rank(q, n) == int(exact(xs, q)), (n, q)


def test_bins_are_bounded_however_widely_values_spread():
    """300 decades of values: at most MAX_INDEX + the zero-side bins per sign, not thousands per
    decade; the extremes land in the edge bins (min/max are kept exactly elsewhere)."""
    keys = {bin_key(10.0 ** (e / 10)) for e in range(-1500, 1500)}
    keys |= {bin_key(-(10.0 ** (e / 10))) for e in range(-1500, 1500)}
    assert len(keys) <= 2 * (MAX_INDEX + 1100)
    assert bin_key(1e150) == bin_key(1e300) == f"p{MAX_INDEX}"
    assert bin_key(-1e300) == f"n{MAX_INDEX}"
    assert bin_key(1e-150) == "z"


def random_bins(rng, n: int) -> dict[str, int]:
    bins: dict[str, int] = {}
    for _ in range(n):
        x = float(rng.choice([rng.lognormal(2, 2), -rng.lognormal(1, 1), 0.0, 5.0]))
        bins[bin_key(x)] = bins.get(bin_key(x), 0) + int(rng.integers(0, 4))  # zero counts too
    return bins


def test_ranked_bins_give_the_quantiles_of_the_merged_bins_bin_for_bin():
    rng = np.random.default_rng(7)
    for _ in range(2000):
        base, extra = random_bins(rng, int(rng.integers(0, 60))), random_bins(rng, int(rng.integers(0, 15)))
        merged = dict(base)
        for k, n in extra.items():
            merged[k] = merged.get(k, 0) + n
        qs = (0.0, 0.5, 0.95, 0.99, 1.0, float(rng.random()))
        ranked = RankedBins(base)
        assert ranked.quantiles_with(extra, qs) == quantiles_of(merged, qs)
        assert ranked.quantiles_with(None, qs) == quantiles_of(base, qs)  # and the base alone
        assert ranked.count == sum(n for n in base.values() if n > 0)


def test_ranked_bins_of_nothing_and_a_bad_q():
    assert RankedBins({}).quantiles_with({}, QS) == [None, None, None]
    assert RankedBins({"p3": 0}).quantiles_with({"p2": 1}, (0.5,)) == [bin_value("p2")]
    with pytest.raises(ValueError):
        RankedBins({"p1": 1}).quantiles_with(None, (1.5,))
