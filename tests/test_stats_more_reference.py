"""More of `ablation_harness.stats` against hand-worked answers and numpy/scipy: the power-law band, pooled SD,
`decompose`, bootstrap over cells, number formatting, the claim schema and `validation_numbers`."""
import math

import numpy as np
import pandas as pd
import pydantic
import pytest
import scipy.stats as sps

from ablation_harness import stats


def test_power_law_band_matches_the_least_squares_covariance():
    xs = np.array([8.0, 16, 32, 64, 128, 256])
    ys = 0.02 * xs ** 0.6 * np.exp([0.03, -0.02, 0.01, 0.0, -0.03, 0.02])
    grid = np.array([4.0, 20.0, 100.0, 500.0])
    X = np.column_stack([np.ones(len(xs)), np.log(xs)])
    b, rss, *_ = np.linalg.lstsq(X, np.log(ys), rcond=None)
    cov = rss[0] / (len(xs) - 2) * np.linalg.inv(X.T @ X)               # covariance of (intercept, slope)
    G = np.column_stack([np.ones(len(grid)), np.log(grid)])
    se = np.sqrt(np.einsum("ij,jk,ik->i", G, cov, G))                    # SE of the mean response on the log scale
    half = sps.t.ppf(0.975, len(xs) - 2) * se
    band = stats.power_law_band(xs, ys, grid)
    assert list(band.columns) == ["x", "fit", "lo", "hi"] and np.allclose(band["x"], grid)
    np.testing.assert_allclose(band["fit"], np.exp(G @ b), rtol=1e-10)
    np.testing.assert_allclose(band["lo"], np.exp(G @ b - half), rtol=1e-10)
    np.testing.assert_allclose(band["hi"], np.exp(G @ b + half), rtol=1e-10)


def test_pooled_sd_is_the_residual_sd_of_the_cell_means_model():
    rng = np.random.default_rng(0)
    rows = [{"a": a, "b": b, "v": rng.normal(a + 2 * b, 0.3)} for a in range(3) for b in range(2)
            for _ in range(2 + a + b)] + [{"a": 9, "b": 9, "v": 5.0}]   # unequal cells and one single-value cell
    df = pd.DataFrame(rows)
    cells = pd.get_dummies(df["a"].astype(str) + "_" + df["b"].astype(str), dtype=float).to_numpy()
    y = df["v"].to_numpy()
    resid = y - cells @ np.linalg.lstsq(cells, y, rcond=None)[0]
    assert stats.pooled_sd(df, "v", ["a", "b"]) == pytest.approx(math.sqrt(resid @ resid / (len(y) - cells.shape[1])), rel=1e-10)
    assert stats.pooled_sd(df.head(1), "v", ["a", "b"]) == 0.0          # no degrees of freedom


def test_decompose_is_two_way_for_every_value_column():
    rng = np.random.default_rng(1)
    df = pd.DataFrame([{"r": r, "c": c, "seed": s, "p": r + c + rng.normal(0, 0.1), "q": r * c + rng.normal(0, 0.1)}
                       for r in (1, 2, 3) for c in (10, 20) for s in range(3)])
    table, effects = stats.decompose(df, "r", "c", ["p", "q"])
    assert list(table["metric"]) == ["p", "q"]
    for v in ("p", "q"):
        summary, eff = stats.two_way(df.rename(columns={v: "value"}), "r", "c")
        row = table.set_index("metric").loc[v]
        assert all(row[k] == pytest.approx(x, nan_ok=True) for k, x in summary.items() if not isinstance(x, str))
        mine = effects[effects["metric"] == v].drop(columns="metric").reset_index(drop=True)
        np.testing.assert_allclose(mine["value"], eff["value"])
        assert mine["term"].tolist() == eff["term"].tolist()


def test_bootstrap_means_has_the_plug_in_variance_of_a_mean():
    x = np.array([0.3, 1.2, -0.7, 2.2, 0.9, 1.5, -0.1, 0.4, 1.1, 0.6])
    y = np.array([2.0, 2.5, 1.0, 3.5])
    boot = stats.bootstrap_means([x], lambda m: m[0], n_boot=20_000, seed=0)
    assert len(boot) == 20_000 and np.array_equal(boot, stats.bootstrap_means([x], lambda m: m[0], n_boot=20_000, seed=0))
    # the bootstrap distribution of a mean of n draws with replacement: mean x̄, variance (plug-in variance) / n
    assert boot.mean() == pytest.approx(x.mean(), abs=4 * x.std() / math.sqrt(len(x) * 20_000))
    assert boot.var() == pytest.approx(x.var() / len(x), rel=0.05)
    diff = stats.bootstrap_means([x, y], lambda m: m[1] - m[0], n_boot=20_000, seed=1)
    assert diff.var() == pytest.approx(x.var() / len(x) + y.var() / len(y), rel=0.05)
    assert np.all(stats.bootstrap_means([[2.0, 2.0, 2.0]], lambda m: m[0], n_boot=50) == 2.0)
    assert len(stats.bootstrap_means([x], lambda m: None, n_boot=50)) == 0          # None results are dropped


def test_formatting_known_answers():
    # half-width 0.007: two significant digits need 4 decimals
    assert stats.decimals_for([0.905, 0.919]) == 4
    assert stats.format_estimate(0.912, [0.905, 0.919]) == "0.9120 [0.9050, 0.9190]"
    assert stats.format_estimate(1234.4, [1209.4, 1259.4], unit="s") == "1234 [1209, 1259] s"     # half-width 25: 0 decimals
    assert stats.format_estimate(0.5, [0.4, 0.6], unit="accuracy") == "0.50 [0.40, 0.60]"        # unit-free units are not shown
    assert stats.format_estimate(0.912345, [math.nan, 0.9]) == "0.912 (no interval)"
    assert stats.decimals_for([0.5, 0.5]) == 3                                                    # zero width: the default
    assert [stats.significant(v) for v in (12.3456, 123456.7, 0.000123456, 2.0)] == ["12.35", "123457", "0.0001235", "2"]
    c = {"estimate": 0.912, "ci": [0.905, 0.919], "unit": "accuracy", "n_seeds": 3, "verdict": "resolved"}
    assert stats.claim_text(c) == "0.9120 [0.9050, 0.9190] (3 seeds, resolved)"
    assert stats.claim_text({**c, "ci": [None, None], "n_seeds": 2, "verdict": "unresolved"}) == \
        "0.912 (no interval) (2 seeds, unresolved)"
    assert stats.claim_text({**c, "n_seeds": 1}) == "0.9120 [0.9050, 0.9190] (1 seed, resolved)"
    assert [stats.seeds_text(n) for n in (0, 1, 2)] == ["0 seeds", "1 seed", "2 seeds"]


def test_claim_schema_refuses_bad_claims_and_keeps_the_reference():
    c = stats.claim("beta_gap", "A gap.", 0.1, [0.05, math.nan], 3, "unresolved",
                    reference={"value": 1 / 6, "source": "a prediction"}, converged=True)
    assert c["ci"] == [0.05, None] and c["reference"] == {"value": pytest.approx(1 / 6), "source": "a prediction"}
    assert stats.Claim.model_validate(c).reference == stats.Reference(value=1 / 6, source="a prediction")
    with pytest.raises(pydantic.ValidationError):
        stats.Claim.model_validate({**c, "id": "Beta-Gap"})                                     # ids are snake_case
    with pytest.raises(pydantic.ValidationError):
        stats.Claim.model_validate({**c, "verdict": "maybe"})                                   # one of the three verdicts
    with pytest.raises(pydantic.ValidationError):
        stats.Claim.model_validate({**c, "extra": 1})
    with pytest.raises(pydantic.ValidationError):
        stats.Reference(value=1.0, source="x", doi="y")
    with pytest.raises(pydantic.ValidationError):
        stats.claim("n", "Negative seeds.", 0.1, [0.0, 0.2], -1, "resolved")


def test_validation_numbers_by_hand():
    m = pd.DataFrame({"split": ["val", "val", "train", "val", "val", "val"],
                      "metric": ["loss", "acc", "loss", "loss", "acc", "loss"],
                      "step": [20, 20, 5, 10, 10, 30], "value": [0.8, 0.71, 9.0, 1.1, 0.62, 0.7]})
    assert stats.validation_numbers(m) == {"val_loss": [1.1, 0.8, 0.7], "val_acc": 0.71}
