"""The ablation_baseline study: its preset, and its claims recomputed from the run files it leaves behind."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import papermill as pm
import pytest
from scipy import stats as sps

from ablation_harness.ablate import main as ablate_main
from ablation_harness.config import load_config
from ablation_harness.stats import read_headline

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "nbs" / "experiments" / "ablation_baseline.ipynb"
PRESET = ROOT / "ablation_harness" / "configs" / "ablation_baseline.yaml"


def test_preset_is_a_study_of_three_cells_over_three_seeds(capsys):
    study = load_config(PRESET)
    assert study.seeds == [0, 1, 2]
    assert [v.name for v in study.variants] == ["no_dropout", "lr_0.01"]
    assert study.baseline["data"]["n_train"] + study.baseline["data"]["n_val"] <= 10_000  # the shipped subset
    assert ablate_main(["--config", str(PRESET), "--out_dir", "unused", "--dry-run"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "PENDING" in line]
    assert len(rows) == 9


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The study at the smoke profile, run once in this process's temp dir."""
    tmp = tmp_path_factory.mktemp("ablation_baseline")
    out = tmp / "out"
    pm.execute_notebook(str(NB), str(tmp / "executed.ipynb"), cwd=str(tmp), progress_bar=False, kernel_name="python3",
                        parameters={"profile": "smoke", "out_dir": str(out), "executor": "serial"})
    return out


def _final_acc(out: Path) -> pd.DataFrame:
    """variant, seed, final val acc from results.jsonl (the sweep's own records)."""
    recs = [json.loads(line) for line in (out / "sweep" / "results.jsonl").read_text().splitlines()]
    return pd.DataFrame(recs)[["variant", "seed", "run_dir", "final/val/acc"]]


def _t_ci(x):
    """Independent 95% t-interval of a mean (NaN when it has no spread)."""
    x = np.asarray(x, float)
    half = sps.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return (x.mean() - half, x.mean() + half) if half > 0 else (math.nan, math.nan)


def _same(a, b):
    """Equal floats, treating None and NaN alike."""
    a = math.nan if a is None else a
    b = math.nan if b is None else b
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-9)


def test_headline_claims_follow_from_the_runs(smoke):
    h = read_headline(smoke / "headline.json")
    ctx, claims = h["context"], {c["id"]: c for c in h["claims"]}
    assert set(claims) == {"baseline_val_acc", "diff_no_dropout", "diff_lr_0_01"}
    assert ctx["profile"] == "smoke" and ctx["seeds"] == [0, 1]
    assert {"n_train", "n_val", "epochs", "wall_time_s", "converged", "convergence_criterion"} <= set(ctx)
    assert (smoke / ctx["key_figure"]).stat().st_size > 5000

    acc = _final_acc(smoke)
    base = acc[acc["variant"] == "baseline"].sort_values("seed")["final/val/acc"].to_numpy()
    c = claims["baseline_val_acc"]
    assert c["estimate"] == pytest.approx(base.mean()) and c["n_seeds"] == 2
    assert all(_same(x, y) for x, y in zip(c["ci"], _t_ci(base)))
    for variant in ("no_dropout", "lr_0.01"):
        other = acc[acc["variant"] == variant].sort_values("seed")["final/val/acc"].to_numpy()
        c = claims["diff_" + variant.replace(".", "_")]
        assert c["ci_method"] == "paired t-interval over seeds"
        assert c["estimate"] == pytest.approx((other - base).mean())
        assert all(_same(x, y) for x, y in zip(c["ci"], _t_ci(other - base)))


def test_convergence_flags_and_verdicts(smoke):
    acc = _final_acc(smoke)
    runs = pd.read_csv(smoke / "runs.csv")
    for r in acc.itertuples():
        rows = [json.loads(line) for line in (Path(r.run_dir) / "metrics.jsonl").read_text().splitlines()]
        val = [x["value"] for x in rows if x["split"] == "val" and x["metric"] == "acc"]
        w = max(1, math.ceil(len(val) / 4))
        expected = max(val[-w:]) - max(val[:-w]) < 0.01 * max(val[:-w])
        flag = runs[(runs["variant"] == r.variant) & (runs["seed"] == r.seed)]["converged"].item()
        assert flag == expected
    claims = {c["id"]: c for c in read_headline(smoke / "headline.json")["claims"]}
    for variant in ("no_dropout", "lr_0.01"):
        c = claims["diff_" + variant.replace(".", "_")]
        assert c["converged"] == bool(runs[runs["variant"].isin(["baseline", variant])]["converged"].all())
        lo, hi = c["ci"]
        excludes_zero = lo is not None and (lo > 0 or hi < 0)
        assert c["verdict"] == ("resolved" if c["converged"] and excludes_zero else "unresolved")
    base = claims["baseline_val_acc"]
    lo, hi = base["ci"]
    assert base["verdict"] == ("unresolved" if not base["converged"] or lo is None else
                               "resolved" if lo >= 0.9 else "contradicts" if hi < 0.9 else "unresolved")


def test_figures_hold_the_data_they_draw(smoke):
    claims = {c["id"]: c for c in read_headline(smoke / "headline.json")["claims"]}
    effects = pd.read_csv(smoke / "figures" / "variant_effects.csv").set_index("variant")
    for variant in ("no_dropout", "lr_0.01"):
        assert effects.loc[variant, "difference"] == pytest.approx(claims["diff_" + variant.replace(".", "_")]["estimate"])
    bands = pd.read_csv(smoke / "figures" / "loss.csv").dropna(subset=["lo", "hi"])
    assert ((bands["lo"] <= bands["mean"] + 1e-12) & (bands["mean"] <= bands["hi"] + 1e-12)).all()
    assert set(pd.read_csv(smoke / "figures" / "loss.csv")["curve"]) == {"train", "val"}
    scree = pd.read_csv(smoke / "figures" / "scree_classifier.csv")
    assert set(scree["source"]) == {"baseline", "no_dropout", "lr_0.01"}
    assert np.allclose(scree[scree["k"] == 1]["sigma"], 1.0) and (scree["sigma"] <= 1 + 1e-9).all()
    assert (scree.groupby("source").size() == 10).all()  # the classifier is 10 x 32
