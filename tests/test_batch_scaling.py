"""Batch-scaling study: the fit, its refusals and warnings, logging keys, divergence, warm-up, Hill, floor."""
import json
import math
import shutil
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from ablation_harness.config import load_config
from ablation_harness.sinks import _wandb_payloads, read_wandb_offline
from ablation_harness.sweep import COMPLETE, DIVERGED, load_records, run_sweep
from ablation_harness.markov import entropy_rate, random_chain, sample_chain, stationary_distribution
from ablation_harness.metrics.noise import (DEEP_K_RATIO, GradientNoise, hill_alpha, hill_curve, hill_interval, noise_scale,
                                            standardized_noise, unit_noise)
from ablation_harness.stats import band_verdict, power_law
from ablation_harness.studies.batch_scaling.analysis import (
    BANDS, FitRefused, analyze, best_lr, beta_by_budget, cell_table, check_fit, local_minimum, optimum_slope_difference)
from ablation_harness.studies.batch_scaling.cli import analysis_cli
from ablation_harness.studies.batch_scaling.log import log_sweep
from ablation_harness.studies.batch_scaling.study import (
    batch_scaling_trial, config_prefix, make_batch_trials, results_table, sheared_lrs)

BATCHES = [8, 16, 32, 64, 128, 256, 512]
LRS = [3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]


def synthetic(beta=0.6, lr64=1e-3, noise=0.005, seeds=(0, 1, 2), curvature=0.3, rng=0, lrs=LRS, batches=BATCHES):
    """Results whose loss is quadratic in ln lr around lr*(B) = lr64 (B/64)^beta, plus Gaussian noise."""
    g = np.random.default_rng(rng)
    rows = [{"batch_size": B, "lr": lr, "seed": s, "diverged": False,
             "final_val_loss": 2.5 + curvature * (math.log(lr) - math.log(lr64 * (B / 64) ** beta)) ** 2 + g.normal(0, noise)}
            for B in batches for lr in lrs for s in seeds]
    return pd.DataFrame(rows)


# --- the fit -------------------------------------------------------------------------------------------------

def test_fit_recovers_known_beta_within_its_se():
    a = analyze(synthetic(beta=0.6), floor=2.0, alpha=3.0, n_boot=300)
    fit = a["fit"]
    assert a["refused"] is None and fit["n"] == 7
    assert abs(fit["beta"] - 0.6) <= 2 * fit["se"] and fit["se"] < 0.05
    lo, hi = a["interval"]
    assert lo <= 0.6 <= hi and a["interval_kind"] == "t-interval of the slope (5 df)"
    # the interval is the slope's t-interval: beta +- t(0.975, n - 2) SE
    half = stats.t.ppf(0.975, fit["n"] - 2) * fit["se"]
    assert (lo, hi) == pytest.approx((fit["beta"] - half, fit["beta"] + half))
    blo, bhi = a["boot_interval"]
    assert blo <= 0.6 <= bhi and len(a["boot"]) > 250
    # the fit is linregress of ln lr* on ln B, on the refined optima it reports
    ref = stats.linregress(np.log(fit["batches"]), np.log(fit["lrs"]))
    assert fit["beta"] == pytest.approx(ref.slope) and fit["r2"] == pytest.approx(ref.rvalue ** 2)


def test_local_minimum_exact_on_a_parabola_and_a_cubic():
    x = np.log([1e-3, 3e-3, 1e-2])
    x0 = math.log(2.2e-3)
    assert local_minimum(x, 0.7 * (x - x0) ** 2 + 1.3) == pytest.approx(x0, abs=1e-9)
    assert local_minimum(x, -(x - x0) ** 2) is None  # opens downwards: no minimum
    # an asymmetric loss (steeper on the low-lr side): the cubic finds its minimum, a 5-point parabola is pulled off
    x5 = np.log(2.2e-3) + np.log(2.0) * np.arange(-2, 3) + 0.3
    y5 = 0.2 * (x5 - x0) ** 2 - 0.05 * (x5 - x0) ** 3
    assert local_minimum(x5, y5, 3) == pytest.approx(x0, abs=1e-9)
    assert abs(local_minimum(x5, y5, 2) - x0) > 0.1
    # noise-free synthetic grid: every interior optimum is recovered exactly
    best = best_lr(cell_table(synthetic(beta=0.5, lr64=1e-3, noise=0.0, seeds=(0,))))
    true = 1e-3 * (best["batch_size"] / 64) ** 0.5
    inner = ~best["edge"]
    assert inner.sum() == 7
    np.testing.assert_allclose(best.loc[inner, "lr_interp"], true[inner], rtol=1e-9)


def test_edge_of_grid_warning():
    # lr*(B) leaves the grid at the top for large batches
    a = analyze(synthetic(beta=1.0, lr64=1e-2, noise=0.0, seeds=(0,)), floor=2.0, n_boot=0)
    edge = a["best"][a["best"]["edge"]]["batch_size"].tolist()
    assert edge and all(B >= 128 for B in edge)
    assert len([w for w in a["warnings"] if "edge of the LR grid" in w]) == len(edge)
    assert any(f"B={edge[0]}" in w for w in a["warnings"])


def test_refuses_flat_losses_and_losses_at_or_below_the_floor():
    g = np.random.default_rng(0)
    flat = synthetic(noise=0.0).assign(final_val_loss=lambda d: math.log(65) + g.normal(0, 1e-4, len(d)))
    with pytest.raises(FitRefused, match="do not differ"):
        check_fit(cell_table(flat), floor=math.log(65))
    a = analyze(flat, floor=math.log(65))
    assert a["fit"] is None and "do not differ" in a["refused"]
    # every config reached the floor except the smallest learning rate: nothing left to tell the others apart
    at_floor = synthetic(noise=0.0).assign(final_val_loss=lambda d: np.where(d["lr"] == LRS[0], 3.0, 2.0 + 1e-3))
    with pytest.raises(FitRefused, match="sit at the floor"):
        check_fit(cell_table(at_floor), floor=2.0)
    with pytest.raises(FitRefused, match="below the floor"):
        check_fit(cell_table(synthetic()), floor=3.0)


def test_seed_offsets_shared_by_all_learning_rates_do_not_flatten_a_row():
    # each seed adds its own constant to every loss (initialisation, data): the optimum is untouched, and the
    # tolerance uses the paired (seed-centred) standard error, so a narrow window around the optimum still fits
    res = synthetic(beta=0.6, noise=0.0, curvature=0.002).assign(
        final_val_loss=lambda d: d["final_val_loss"] + 0.05 * d["seed"])
    cells = cell_table(res)
    assert cells["loss_sem"].min() > 0.02 and cells["loss_sem_paired"].max() < 1e-9
    assert check_fit(cells, floor=2.0) == BATCHES
    assert 3 * cells["loss_sem"].mean() > cells.groupby("batch_size")["loss"].agg(np.ptp).max()  # unpaired: all "flat"


def test_bend_is_detected_and_only_the_rising_branch_fitted():
    lr_star = {8: 1e-4, 16: 2e-4, 32: 4e-4, 64: 8e-4, 128: 1.6e-3, 256: 4e-4, 512: 1e-4}
    rows = [{"batch_size": B, "lr": lr, "seed": 0, "diverged": False,
             "final_val_loss": 2.5 + 0.3 * (math.log(lr) - math.log(lr_star[B])) ** 2}
            for B in BATCHES for lr in np.geomspace(1e-5, 1e-1, 13)]
    a = analyze(pd.DataFrame(rows), floor=2.0, n_boot=0)
    assert a["bend"]["peak_batch"] == 128
    assert a["fit"]["batches"] == [8, 16, 32, 64, 128]
    assert a["fit"]["beta"] == pytest.approx(1.0, abs=1e-6)
    assert any("surge" in w for w in a["warnings"])


def test_cli_writes_analysis_and_exits_2_when_refusing(tmp_path):
    synthetic().to_csv(tmp_path / "ok.csv", index=False)
    assert analysis_cli(["--results", str(tmp_path / "ok.csv"), "--out", str(tmp_path / "a"), "--n-boot", "50"]) == 0
    assert (tmp_path / "a" / "analysis.json").exists() and (tmp_path / "a" / "figures" / "optimal_lr.png").exists()
    synthetic(noise=0.0).assign(final_val_loss=3.0).to_csv(tmp_path / "flat.csv", index=False)
    assert analysis_cli(["--results", str(tmp_path / "flat.csv"), "--out", str(tmp_path / "b")]) == 2
    # the seed's command line, `--results PATH` alone, on a table in the seed's format, writes beside the file
    seed_csv = synthetic(seeds=(0,)).drop(columns=["seed", "diverged"]).assign(converged=False)
    seed_csv.to_csv(tmp_path / "results.csv", index=False)
    assert analysis_cli(["--results", str(tmp_path / "results.csv")]) == 0
    assert json.loads((tmp_path / "analysis" / "analysis.json").read_text())["beta"] == pytest.approx(0.6, abs=0.05)


def test_diverged_cells_are_excluded_from_the_fit():
    res = synthetic(seeds=(0,), noise=0.0)
    trap = (res["batch_size"] == 64) & (res["lr"] == 3e-2)
    res.loc[trap, ["final_val_loss", "diverged"]] = [0.0, True]  # a diverged run must not become the optimum
    a = analyze(res, floor=None, n_boot=0)
    row = a["best"].set_index("batch_size").loc[64]
    assert row["lr_grid"] == 1e-3 and a["cells"].loc[trap.values, "loss"].isna().all()
    assert a["fit"]["beta"] == pytest.approx(0.6, abs=1e-6)


def test_sheared_grid_gives_the_same_optima_as_a_rectangular_one():
    # every batch size has its own five learning rates around lr* = 1e-3 (B/64)^0.6: a parabola in ln lr
    lrs = sheared_lrs(BATCHES, {8: 1e-3 * (8 / 64) ** 0.6, 512: 1e-3 * 8 ** 0.6}, factor=2.0, n=5)
    assert all(len(v) == 5 for v in lrs.values()) and lrs[64][2] == pytest.approx(1e-3, rel=1e-2)
    assert lrs[64][3] / lrs[64][2] == pytest.approx(2.0, rel=1e-2)
    rows = [{"batch_size": B, "lr": lr, "seed": 0, "diverged": False,
             "final_val_loss": 2.5 + 0.3 * (math.log(lr) - math.log(1e-3 * (B / 64) ** 0.6)) ** 2}
            for B, v in lrs.items() for lr in v]
    for optimum in ("parabola3", "parabola5", "cubic5"):
        a = analyze(pd.DataFrame(rows), floor=2.0, n_boot=0, optimum=optimum)
        assert not a["warnings"] and a["fit"]["beta"] == pytest.approx(0.6, abs=1e-6)


def test_slope_difference_is_the_difference_of_the_slopes():
    g = np.random.default_rng(0)
    best = {name: pd.DataFrame({"batch_size": BATCHES, "lr_interp": 1e-3 * (np.array(BATCHES) / 64) ** b
                                * np.exp(g.normal(0, 0.1, len(BATCHES)))}) for name, b in (("a", 0.7), ("b", 0.5))}
    d = optimum_slope_difference(best["a"], best["b"])
    fa, fb = (power_law(best[k]["batch_size"], best[k]["lr_interp"]) for k in ("a", "b"))
    assert d["beta"] == pytest.approx(fa["beta"] - fb["beta"], abs=1e-12)
    half = stats.t.ppf(0.975, len(BATCHES) - 2) * d["se"]
    assert d["ci"] == pytest.approx([d["beta"] - half, d["beta"] + half])


def test_band_verdict_names_the_bands_an_interval_meets():
    assert band_verdict([0.47, 0.53], BANDS) == "gaussian" and band_verdict([0.61, 0.70], BANDS) == "laplace"
    assert band_verdict([0.50, 0.65], BANDS) == "both" and band_verdict([0.56, 0.59], BANDS) == "neither"
    assert band_verdict([0.8, 1.0], BANDS) == "neither"


def test_beta_by_budget_refits_at_each_fraction_of_the_budget():
    res = synthetic(beta=0.6, noise=0.0, seeds=(0,)).assign(steps=lambda d: 6400 // d["batch_size"])
    # the optimum drifts with the budget fraction f: lr*(B, f) = 1e-3 (B/64)^(0.6 f)
    curves = pd.DataFrame([{"batch_size": r.batch_size, "lr": r.lr, "seed": 0, "step": round(f * r.steps),
                            "val_loss": 2.5 + 0.3 * (math.log(r.lr) - math.log(1e-3 * (r.batch_size / 64) ** (0.6 * f))) ** 2}
                           for r in res.itertuples() for f in (0.5, 0.75, 0.875, 1.0)])
    table = beta_by_budget(res, curves, floor=2.0)
    assert table["fraction"].tolist() == [0.75, 0.875, 1.0]
    np.testing.assert_allclose(table["beta"], [0.45, 0.525, 0.6], atol=0.02)


# --- real trials: logging keys, warm-up, divergence -----------------------------------------------------------

STEPS, WARMUP = 20, 5


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Four real trials (B 8, 16 x lr 1e-3, 1e3), serial; the lr 1e3 ones diverge."""
    out = tmp_path_factory.mktemp("bs")
    preset = load_config(files("ablation_harness") / "configs" / "phase_2_batch_sweep.yaml")
    preset.grid = {"train.batch_size": [8, 16], "optim.lr": [1e-3, 1e3]}
    preset.seeds = [0]
    base = dict(preset.base)
    base["data"] = {**base["data"], "n_val": 64}
    base["device"] = "cpu"
    base["scheduler"] = {"name": "constant", "warmup_fraction": WARMUP / STEPS}
    base["callbacks"] = [{"name": "batch_scaling_log", "log_every": 1, "val_points": 4}]
    preset.base = base
    trials = make_batch_trials(preset, out / "sweep", steps=STEPS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: intra-op threads only add contention
    try:
        run_sweep(trials, out / "sweep", trial_fn=batch_scaling_trial, executor="serial", progress=False)
    finally:
        torch.set_num_threads(threads)
    results = results_table(load_records(out / "sweep"))
    log_sweep(results, out)
    return out, results


def expected_keys(B, lr):
    p = config_prefix(B, lr)
    return {f"{p}/train_loss", f"{p}/val_loss", f"{p}/learning_rate", f"{p}/step",
            f"summary/{p}_final_val_loss", f"summary/{p}_final_train_loss", f"summary/{p}_converged"}


SHARED = {"train_loss", "val_loss", "batch_size", "lr", "step", "summary/final_val_loss", "summary/final_train_loss",
          "summary/batch_size", "summary/lr", "config/batch_size", "config/lr", "config/experiment_num"}


def test_namespaced_keys_in_wandb_and_tensorboard(sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out, results = sweep
    history, _ = read_wandb_offline(out / "wandb")
    wandb_keys = {k for row in history for k in row if not k.startswith("_")}
    ea = EventAccumulator(str(out / "tb"), size_guidance={"scalars": 0})
    ea.Reload()
    tb_keys = set(ea.Tags()["scalars"])
    for keys in (wandb_keys, tb_keys):
        for B in (8, 16):
            assert {k for k in keys if config_prefix(B, 1e-3) in k} == expected_keys(B, 1e-3)
            assert {k for k in keys if config_prefix(B, 1e3) in k} <= expected_keys(B, 1e3)
        assert {k for k in keys if "_LR" not in k} == SHARED
    # one W&B run; experiment numbers 1..4 batch-major; the per-config step restarts, the global one does not
    assert len(list((out / "wandb").glob("offline-run-*"))) == 1
    nums = [row["config/experiment_num"] for row in history if "config/experiment_num" in row]
    assert nums == [1, 2, 3, 4]
    steps = [row["_step"] for row in history]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    cfg_steps = [e.value for e in ea.Scalars(f"{config_prefix(16, 1e-3)}/step")]
    assert cfg_steps == list(range(1, STEPS + 1))


def wandb_run_project(run_dir) -> str:
    """The project stored in the run record of the offline W&B run under run_dir."""
    from wandb.proto import wandb_internal_pb2 as pb
    (f,) = Path(run_dir).rglob("*.wandb")
    for payload in _wandb_payloads(f.read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(payload)
        if rec.WhichOneof("record_type") == "run":
            return rec.run.project
    raise AssertionError("no run record")


def test_wandb_project_comes_from_the_preset(sweep, tmp_path):
    out, results = sweep
    preset = load_config(files("ablation_harness") / "configs" / "phase_2_batch_sweep.yaml")
    assert preset.base["sinks"] == {"wandb_project": "laplace-scaling-phase2"}  # the seed's name, no entity
    assert wandb_run_project(out / "wandb") == "laplace-scaling-phase2"
    # another project set in the trials' configs (copies of the runs) is honoured by the sweep logger
    copies = results.assign(run_dir=[shutil.copytree(d, tmp_path / "runs" / Path(d).name) for d in results["run_dir"]])
    for d in copies["run_dir"]:
        f = Path(d) / "config.yaml"
        f.write_text(f.read_text().replace("wandb_project: laplace-scaling-phase2", "wandb_project: my-project"))
    logged = log_sweep(copies, tmp_path / "log", tensorboard=False)
    assert logged["wandb_project"] == "my-project" and wandb_run_project(tmp_path / "log" / "wandb") == "my-project"


def test_warmup_schedule_equals_its_formula_at_every_step(sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out, _ = sweep
    ea = EventAccumulator(str(out / "tb"), size_guidance={"scalars": 0})
    ea.Reload()
    used = [e.value for e in ea.Scalars(f"{config_prefix(8, 1e-3)}/learning_rate")]
    formula = [1e-3 * min(1.0, (t + 1) / WARMUP) for t in range(STEPS)]  # t: 0-based optimiser step
    np.testing.assert_allclose(used, formula, rtol=1e-6)


def test_divergence_is_recorded_and_the_sweep_goes_on(sweep):
    out, results = sweep
    states = {(r["batch_size"], r["lr"]): r["state"] for r in load_records(out / "sweep")}
    assert states[(8, 1e-3)] == COMPLETE and states[(16, 1e-3)] == COMPLETE
    assert states[(8, 1e3)] == DIVERGED and states[(16, 1e3)] == DIVERGED
    assert results.set_index("lr").loc[1e3, "diverged"].all()
    cells = cell_table(results)
    assert cells[cells["lr"] == 1e3]["loss"].isna().all() and (cells[cells["lr"] == 1e3]["n_diverged"] == 1).all()
    assert set(results.columns) >= {"batch_size", "lr", "final_val_loss", "min_val_loss", "final_train_loss", "converged",
                                    "diverged", "steps", "examples_seen", "wall_time_s", "seed"}
    ok = results[~results["diverged"]]
    assert (ok["steps"] == STEPS).all() and (ok["examples_seen"] == ok["batch_size"] * STEPS).all()


# --- phase 1 and the task -------------------------------------------------------------------------------------

def test_hill_recovers_tail_index():
    g = np.random.default_rng(0)
    pareto = torch.from_numpy(g.pareto(3.0, 200_000) + 1.0)
    for r in (0.05, 0.1, 0.2):
        assert hill_alpha(pareto, r) == pytest.approx(3.0, rel=0.05)
    # hill_curve is the Hill formula for every k at once
    a = np.sort(np.abs(pareto.numpy()))[::-1]
    k = 1000
    assert hill_curve(pareto, [k / len(a)])[0] == pytest.approx(1 / np.mean(np.log(a[:k] / a[k])), rel=1e-9)


# (law, its parameters, tail index, k/n): Hill's bias grows with the index (second-order parameter -2/nu for
# a t), so a lighter tail needs a deeper k/n for the bias to stay well inside the interval
INJECTED = [("student_t", {"df": 3.0}, 3.0, DEEP_K_RATIO), ("student_t", {"df": 2.5}, 2.5, DEEP_K_RATIO),
            ("student_t", {"df": 4.0}, 4.0, 0.0005), ("stable", {"alpha": 1.5}, 1.5, DEEP_K_RATIO)]


@pytest.mark.parametrize("kind,kw,index,k_ratio", INJECTED, ids=lambda v: str(v))
def test_hill_recovers_the_tail_index_of_each_injected_noise(kind, kw, index, k_ratio):
    rng = np.random.default_rng(1)
    x = GradientNoise(kind, scale=0.3, **kw).sample((2_000_000,), 64, rng)
    h = hill_interval(x, k_ratio)
    assert h["k"] == int(k_ratio * 2_000_000) and h["lo"] <= index <= h["hi"], h
    assert h["hi"] - h["lo"] < 0.15 * index  # and the interval is informative


@pytest.mark.parametrize("kind", ["gaussian", "laplace"])
def test_light_tailed_injections_have_no_finite_tail_index(kind):
    # no power-law tail: the Hill estimate keeps rising as k shrinks, far above the heavy-tailed indices
    x = GradientNoise(kind, scale=0.3).sample((2_000_000,), 64, np.random.default_rng(2))
    curve = hill_curve(x, [0.2, 0.1, 0.05, 0.01, DEEP_K_RATIO])
    assert np.all(np.diff(curve) > 0)
    assert hill_interval(x, DEEP_K_RATIO)["lo"] > 6


def test_hill_reads_the_seed_ratios_wrong():
    # at the seed's k/n = 0.1 the Hill estimate reads ~3 on a Laplace (no power tail) and ~2.4 on a t_3
    rng = np.random.default_rng(3)
    read = {name: hill_alpha(torch.from_numpy(x), 0.1) for name, x in
            {"laplace": rng.laplace(size=1_000_000), "t3": rng.standard_t(3, 1_000_000),
             "gaussian": rng.standard_normal(1_000_000)}.items()}
    assert read["laplace"] == pytest.approx(3.1, abs=0.1)
    assert read["t3"] == pytest.approx(2.45, abs=0.1)
    assert read["gaussian"] == pytest.approx(4.7, abs=0.15)


def test_standardised_pipeline_keeps_the_t3_tail_and_separates_light_tails():
    # the probe's pipeline (median/MAD standardisation over 32 draws of 15,700 entries, 4 probe steps)
    rng = np.random.default_rng(5)
    z = {kind: torch.cat([standardized_noise(torch.from_numpy(unit_noise(kind, 32 * 15_700, rng)).reshape(32, 15_700)).flatten()
                          for _ in range(4)]) for kind in ("student_t", "gaussian")}
    assert hill_interval(z["student_t"], DEEP_K_RATIO)["alpha"] == pytest.approx(3.0, rel=0.06)
    assert hill_interval(z["gaussian"], DEEP_K_RATIO)["lo"] > 4.5


@pytest.mark.parametrize("kind,law", [("gaussian", stats.norm()), ("student_t", stats.t(3, scale=math.sqrt(1 / 3))),
                                      ("laplace", stats.laplace(scale=1 / math.sqrt(2)))], ids=lambda v: str(v)[:9])
def test_injected_noise_has_its_law_with_the_gaussian_variance(kind, law):
    # s / sqrt(B) times a unit-variance draw of the named law (Kolmogorov-Smirnov against it)
    s, B = 0.2, 16
    x = GradientNoise(kind, scale=s).sample((200_000,), B, np.random.default_rng(4)).double().numpy()
    assert law.var() == pytest.approx(1.0)
    assert stats.kstest(x / (s / math.sqrt(B)), law.cdf).pvalue > 0.01


def test_stable_injection_scales_with_batch_as_its_law():
    rng = np.random.default_rng(0)
    stable = GradientNoise("stable", scale=1.0, alpha=1.5)
    # the median |x| of a stable law scales like its scale: B^(1/alpha - 1)
    m1 = stable.sample((200_000,), 1, rng).abs().median().item()
    m64 = stable.sample((200_000,), 64, rng).abs().median().item()
    assert m64 / m1 == pytest.approx(64 ** (1 / 1.5 - 1), rel=0.05)


def test_injection_is_reproducible_and_rejects_bad_laws():
    a = GradientNoise("student_t", scale=1.0).sample((1000,), 8, np.random.default_rng([0, 3]))
    b = GradientNoise("student_t", scale=1.0).sample((1000,), 8, np.random.default_rng([0, 3]))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="df > 2"):
        GradientNoise("student_t", df=2.0)
    with pytest.raises(ValueError, match="kind"):
        GradientNoise("cauchy")


def test_noise_scale_estimator_is_unbiased_on_known_gradients():
    g = torch.Generator().manual_seed(0)
    d, b, K = 40, 8, 4000
    G = torch.linspace(-0.2, 0.2, d)
    sd = torch.linspace(0.1, 1.0, d)  # per-example noise std per entry: tr(Sigma) = sum sd^2
    minibatches = G + sd * torch.randn(K, b, d, generator=g).mean(1)
    est = noise_scale(minibatches, b)
    tr, g2 = float((sd ** 2).sum()), float((G ** 2).sum())
    assert est["tr_sigma"] == pytest.approx(tr, rel=0.05)
    assert est["grad_sq"] == pytest.approx(g2, rel=0.1)
    assert est["b_simple"] == pytest.approx(tr / g2, rel=0.12)


def test_entropy_rate_floor_equals_monte_carlo():
    P = random_chain(48, 0.1, 0)
    pi = stationary_distribution(P)
    np.testing.assert_allclose(pi @ P, pi, atol=1e-12)
    seq = sample_chain(P, 20_000, 21, torch.Generator().manual_seed(1))
    logp = -np.log(P[seq[:, :-1].numpy(), seq[:, 1:].numpy()])  # [n, 20]
    per_seq = logp.mean(1)  # independent sequences
    se = per_seq.std(ddof=1) / math.sqrt(len(per_seq))
    assert abs(per_seq.mean() - entropy_rate(P)) < 4 * se
    freq = np.bincount(seq[:, 0].numpy(), minlength=48) / len(seq)
    assert np.abs(freq - pi).max() < 0.01  # sequences start from the stationary distribution
