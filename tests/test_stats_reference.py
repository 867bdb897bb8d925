"""The seed statistics of `ablation_harness.stats` against textbook formulas and numpy/scipy references."""
import math

import numpy as np
import pytest
import scipy.stats as sps

from ablation_harness import stats

VALUES = [0.91, 0.93, 0.90, 0.94, 0.92]


def test_t_interval_matches_textbook_formula():
    x = np.array(VALUES)
    half = sps.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    m, lo, hi = stats.t_interval(x)
    assert m == pytest.approx(x.mean())
    assert (lo, hi) == pytest.approx((x.mean() - half, x.mean() + half), rel=1e-12)
    assert math.isnan(stats.t_interval([1.0])[1])                       # one seed: no interval


def test_diff_interval_is_welch():
    a, b = np.array([0.91, 0.92, 0.95, 0.93]), np.array([0.80, 0.84, 0.79])
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))   # Welch-Satterthwaite
    d, se = a.mean() - b.mean(), math.sqrt(va + vb)
    half = sps.t.ppf(0.975, df) * se
    got = stats.diff_interval(a, b)
    assert got["estimate"] == pytest.approx(d)
    assert got["ci"] == pytest.approx([d - half, d + half], rel=1e-10)
    assert got["p_value"] == pytest.approx(2 * sps.t.sf(abs(d / se), df), rel=1e-10)


def test_paired_interval_is_a_one_sample_interval_of_the_differences():
    a, b = np.array([1.0, 2.0, 3.0, 4.5]), np.array([0.5, 1.4, 2.6, 3.9])
    m, lo, hi = stats.t_interval(a - b)
    got = stats.paired_interval(a, b)
    assert got["estimate"] == pytest.approx(m) and got["ci"] == pytest.approx([lo, hi])
    t = (a - b).mean() / ((a - b).std(ddof=1) / 2)
    assert got["p_value"] == pytest.approx(2 * sps.t.sf(t, 3), rel=1e-10)


def test_bootstrap_interval_is_seeded_and_close_to_the_t_interval_for_a_large_sample():
    x = np.random.default_rng(0).normal(1.0, 2.0, 400)
    est, lo, hi = stats.bootstrap_interval(x, seed=3)
    assert (est, lo, hi) == stats.bootstrap_interval(x, seed=3)           # deterministic in the seed
    _, tlo, thi = stats.t_interval(x)
    assert est == pytest.approx(x.mean())
    assert lo == pytest.approx(tlo, abs=0.1 * (thi - tlo)) and hi == pytest.approx(thi, abs=0.1 * (thi - tlo))


def test_power_law_matches_numpy_least_squares_on_logs():
    xs = np.array([8.0, 16, 32, 64, 128, 256])
    ys = 0.02 * xs ** -0.7 * np.exp([0.02, -0.01, 0.0, 0.015, -0.02, 0.01])
    lx, ly = np.log(xs), np.log(ys)
    slope, icpt = np.polyfit(lx, ly, 1)
    resid = ly - (slope * lx + icpt)
    se = math.sqrt(resid @ resid / (len(xs) - 2) / ((lx - lx.mean()) ** 2).sum())
    f = stats.power_law(xs, ys)
    assert (f["beta"], f["intercept"], f["se"]) == pytest.approx((slope, icpt, se), rel=1e-9)
    half = sps.t.ppf(0.975, len(xs) - 2) * se
    assert f["ci"] == pytest.approx([slope - half, slope + half], rel=1e-9)
    assert f["r2"] == pytest.approx(np.corrcoef(lx, ly)[0, 1] ** 2) and f["n"] == 6


def test_verdicts_and_plateau_known_answers():
    assert stats.effect_verdict([0.01, 0.03]) == "resolved"
    assert stats.effect_verdict([-0.01, 0.03]) == "unresolved"
    assert stats.effect_verdict([0.01, 0.03], converged=False) == "unresolved"
    assert stats.reference_verdict([0.4, 0.5], 0.44) == "resolved"
    assert stats.reference_verdict([0.4, 0.5], 0.6) == "contradicts"
    assert stats.plateaued([2.0, 1.0, 0.999, 0.998, 0.9985])              # < 1% gain over the last 3
    assert not stats.plateaued([2.0, 1.5, 1.2, 1.0, 0.8])


def test_claims_round_trip_through_headline_json(tmp_path):
    c = stats.claim("gap", "A beats B.", 0.02, [0.01, 0.03], 3, stats.effect_verdict([0.01, 0.03]), unit="accuracy")
    path = stats.write_headline(tmp_path / "headline.json", "demo", {"profile": "smoke"}, [c])
    back = stats.read_headline(path)
    assert back["claims"] == [c]
    table = stats.claims_table([back])
    assert list(table["id"]) == ["gap"] and list(table["verdict"]) == ["resolved"]
