"""Batch-scaling study: the fit, its refusals and warnings, logging keys, divergence, warm-up, Hill, floor."""
import math
from importlib.resources import files

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from ablation_harness.config import load_config
from ablation_harness.sinks import read_wandb_offline
from ablation_harness.sweep import COMPLETE, DIVERGED, load_records, run_sweep
from ablation_harness.studies.batch_scaling import (
    FitRefused, GradientNoise, analysis_cli, analyze, best_lr, cell_table, check_fit, config_prefix, entropy_rate,
    hill_alpha, log_sweep, make_batch_trials, noise_scale, quadratic_vertex, random_chain, results_table, sample_chain,
    stationary_distribution, symmetric_stable, batch_scaling_trial)

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
    assert lo <= 0.6 <= hi and a["interval_kind"] == "bootstrap"
    # the fit is linregress of ln lr* on ln B, on the refined optima it reports
    ref = stats.linregress(np.log(fit["batches"]), np.log(fit["lrs"]))
    assert fit["beta"] == pytest.approx(ref.slope) and fit["r2"] == pytest.approx(ref.rvalue ** 2)


def test_quadratic_vertex_exact_on_a_parabola():
    x = np.log([1e-3, 3e-3, 1e-2])
    x0 = math.log(2.2e-3)
    assert quadratic_vertex(x, 0.7 * (x - x0) ** 2 + 1.3) == pytest.approx(x0, abs=1e-12)
    assert quadratic_vertex(x, -(x - x0) ** 2) is None  # opens downwards: no minimum
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


def test_diverged_cells_are_excluded_from_the_fit():
    res = synthetic(seeds=(0,), noise=0.0)
    trap = (res["batch_size"] == 64) & (res["lr"] == 3e-2)
    res.loc[trap, ["final_val_loss", "diverged"]] = [0.0, True]  # a diverged run must not become the optimum
    a = analyze(res, floor=None, n_boot=0)
    row = a["best"].set_index("batch_size").loc[64]
    assert row["lr_grid"] == 1e-3 and a["cells"].loc[trap.values, "loss"].isna().all()
    assert a["fit"]["beta"] == pytest.approx(0.6, abs=1e-6)


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
    t3 = torch.from_numpy(g.standard_t(3, 1_000_000))
    assert hill_alpha(t3, 0.005) == pytest.approx(3.0, rel=0.1)
    stable = symmetric_stable(1.5, (400_000,), torch.Generator().manual_seed(0))
    assert hill_alpha(stable, 0.05) == pytest.approx(1.5, rel=0.1)


def test_injected_noise_scales_with_batch_as_its_law():
    gen = torch.Generator().manual_seed(0)
    gauss = GradientNoise("gaussian", scale=0.2)
    for B in (1, 16, 256):
        assert gauss.sample((200_000,), B, gen).std().item() == pytest.approx(0.2 / math.sqrt(B), rel=0.02)
    stable = GradientNoise("stable", scale=1.0, alpha=1.5)
    # the median |x| of a stable law scales like its scale: B^(1/alpha - 1)
    m1 = stable.sample((200_000,), 1, gen).abs().median().item()
    m64 = stable.sample((200_000,), 64, gen).abs().median().item()
    assert m64 / m1 == pytest.approx(64 ** (1 / 1.5 - 1), rel=0.05)


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
