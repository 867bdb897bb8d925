"""studies.factorial: two-way decomposition, claim statistics, heatmap annotations, CLI redraw in both layouts,
masked loss, checkpoint metrics, early stopping."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy import stats

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ablation_harness.config import RunConfig
from ablation_harness.core import UserError
from ablation_harness.models import CNNGRU
from ablation_harness.stats import best_vs_worst, factor_contrast, limit_side, partial_eta_squared, two_way
from ablation_harness.studies.factorial.analysis import NINE, WARNINGS, cell_table, read_history
from ablation_harness.studies.factorial.cli import factorial_cli, factorial_main, metrics_cli
from ablation_harness.studies.factorial.figures import plot_factorial_heatmaps
from ablation_harness.studies.factorial.measure import run_checkpoint_metrics
from ablation_harness.studies.factorial.study import Design, checkpoint_dir_of, customize, load_preset, train_all
from ablation_harness.tasks import MASK, POLICY_VALUE, masked_loss, masked_metrics
from ablation_harness.train import EarlyStop, run, save_checkpoint


# ---------------------------------------------------------------- two-way decomposition

def _table(effect, seeds=3, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    rows = [{"r": r, "c": c, "seed": s, "value": effect(i, j) + noise * rng.standard_normal()}
            for i, r in enumerate((16, 64, 256)) for j, c in enumerate((8, 32, 128)) for s in range(seeds)]
    return pd.DataFrame(rows)


def _nested_f_test(df):
    """Reference: interaction SS and F test as the RSS difference of additive vs full least-squares models."""
    R = pd.get_dummies(df["r"].astype(str), dtype=float).to_numpy()
    C = pd.get_dummies(df["c"].astype(str), dtype=float).to_numpy()
    cells = pd.get_dummies(df["r"].astype(str) + "_" + df["c"].astype(str), dtype=float).to_numpy()
    y = df["value"].to_numpy()
    rss = lambda X: float(np.sum((y - X @ np.linalg.lstsq(X, y, rcond=None)[0]) ** 2))
    rss_add, rss_full = rss(np.hstack([np.ones((len(y), 1)), R[:, 1:], C[:, 1:]])), rss(cells)
    df_int, df_err = 4, len(y) - 9
    F = ((rss_add - rss_full) / df_int) / (rss_full / df_err)
    return rss_add - rss_full, F, stats.f.sf(F, df_int, df_err), float(np.sum((y - y.mean()) ** 2))


def test_additive_table_has_zero_interaction():
    a, b = np.array([0.0, 2.0, 7.0]), np.array([1.0, -1.0, 3.0])
    df = _table(lambda i, j: 5 + a[i] + b[j])
    s, eff = two_way(df, "r", "c")
    inter = eff[eff["term"] == "interaction"]["value"]
    assert np.abs(inter).max() < 1e-12 and s["share_interaction"] < 1e-20 and not s["non_additive"]
    assert s["grand_mean"] == pytest.approx(5 + a.mean() + b.mean())
    assert eff[eff["term"] == "row"]["value"].to_numpy() == pytest.approx(a - a.mean())
    assert eff[eff["term"] == "col"]["value"].to_numpy() == pytest.approx(b - b.mean())
    assert s["share_row"] + s["share_col"] == pytest.approx(1.0)


def test_constructed_interaction_is_flagged_and_matches_nested_f_test():
    a, b = np.array([0.0, 2.0, 7.0]), np.array([1.0, -1.0, 3.0])
    additive = _table(lambda i, j: a[i] + b[j], noise=0.1)
    crossed = _table(lambda i, j: a[i] + b[j] + 6.0 * (i == 2 and j == 2), noise=0.1)
    s_add, _ = two_way(additive, "r", "c")
    s_int, eff = two_way(crossed, "r", "c")
    assert not s_add["non_additive"] and s_int["non_additive"]
    ss_int, F, p, ss_tot = _nested_f_test(crossed)
    assert s_int["F_interaction"] == pytest.approx(F, rel=1e-8)
    assert s_int["p_interaction"] == pytest.approx(p, rel=1e-6, abs=1e-300)
    assert s_int["share_interaction"] == pytest.approx(ss_int / ss_tot, rel=1e-8)
    corner = eff[(eff["term"] == "interaction")].set_index(["r", "c"])["value"]
    assert corner.abs().idxmax() == (256, 128)
    _, F_add, p_add, _ = _nested_f_test(additive)
    assert s_add["p_interaction"] == pytest.approx(p_add, rel=1e-6)
    # main-effect shares: the RSS drop from adding the row (column) dummies to the intercept-only model
    y, one = crossed["value"].to_numpy(), np.ones((len(crossed), 1))
    rss = lambda X: float(np.sum((y - X @ np.linalg.lstsq(X, y, rcond=None)[0]) ** 2))
    for key, share in (("r", "share_row"), ("c", "share_col")):
        D = pd.get_dummies(crossed[key].astype(str), dtype=float).to_numpy()[:, 1:]
        assert s_int[share] == pytest.approx((rss(one) - rss(np.hstack([one, D]))) / ss_tot, rel=1e-8)


# ---------------------------------------------------------------- masked loss

def _padded_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([5, 2, 4])
    mask = torch.arange(5)[None] < lengths[:, None]
    policy = torch.softmax(torch.randn(3, 5, 7, generator=g), -1)
    value = torch.randint(-1, 2, (3, 5), generator=g).float()
    y = torch.cat([policy, value[..., None], mask[..., None].float()], -1) * mask[..., None]
    y[..., MASK] = mask.float()
    logits = torch.randn(3, 5, 7, generator=g, requires_grad=True)
    v = torch.tanh(torch.randn(3, 5, generator=g)).requires_grad_()
    return (logits, v), y, mask


def test_masked_loss_ignores_padding_and_matches_reference():
    out, y, mask = _padded_batch()
    loss = masked_loss(out, y)
    grads = torch.autograd.grad(loss, out)
    y2 = y.clone()
    pad = ~mask
    y2[..., :8][pad] = torch.randn(int(pad.sum()), 8) * 100
    y2[1, 3, :8] = float("nan")                                            # game 1 has 2 positions
    loss2 = masked_loss(out, y2)
    grads2 = torch.autograd.grad(loss2, out)
    assert torch.equal(loss, loss2) and all(torch.equal(g1, g2) for g1, g2 in zip(grads, grads2))
    logits, v = out
    ce = torch.nn.functional.cross_entropy(logits[mask], y[..., :7][mask])          # soft targets
    mse = torch.nn.functional.mse_loss(v[mask], y[..., 7][mask])
    assert loss.item() == pytest.approx((ce + mse).item(), rel=1e-6)
    acc = masked_metrics(out, y2)["acc"].item()
    top = logits.argmax(-1)[mask]
    best = y[..., :7][mask].max(-1).values
    assert acc == pytest.approx((y[..., :7][mask].gather(1, top[:, None])[:, 0] >= best - 1e-6).float().mean().item())


# ---------------------------------------------------------------- checkpoint metrics

def _np_params(state, prefix):
    return np.concatenate([v.numpy().ravel().astype(np.float64) for k, v in state.items()
                           if k.startswith(prefix) and v.is_floating_point() and "running" not in k])


def test_checkpoint_metrics_match_hand_computation(tmp_path):
    torch.manual_seed(0)
    cfg = RunConfig.model_validate({"model": {"name": "cnn_gru", "channels": 4, "hidden": 6}, "data": {"name": "connect4",
                                    "normalize": False}})
    run = tmp_path / "k3_c4_gru6_s0"
    (run / "ckpt").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True)))
    m1 = CNNGRU(4, 6, 3)
    m2 = CNNGRU(4, 6, 3)
    m2.load_state_dict(m1.state_dict())
    with torch.no_grad():
        for p in m2.parameters():
            p.add_(0.05 * torch.randn_like(p))
    for b in (m2.cnn[1], m2.cnn[4]):                                     # BatchNorm running stats move too
        b.running_mean.uniform_(-0.2, 0.2), b.running_var.uniform_(0.5, 1.5)
    save_checkpoint(run / "ckpt" / "epoch003.pt", m1)
    save_checkpoint(run / "ckpt" / "epoch006.pt", m2)
    boards = torch.rand(20, 3, 6, 7).round()
    rows, spectrum = run_checkpoint_metrics(run, boards, "gru")
    s1, s2 = m1.state_dict(), m2.state_dict()
    w1, w2 = _np_params(s1, "gru."), _np_params(s2, "gru.")
    assert rows["epoch"].tolist() == [3, 6]
    assert rows["weight_norm"].tolist() == pytest.approx([np.linalg.norm(w1), np.linalg.norm(w2)])
    assert np.isnan(rows["step_norm"].iloc[0])
    assert rows["step_norm"].iloc[1] == pytest.approx(np.linalg.norm(w2 - w1))
    assert rows["relative_step"].iloc[1] == pytest.approx(np.linalg.norm(w2 - w1) / np.linalg.norm(w1))
    assert rows["step_cosine"].iloc[1] == pytest.approx(w1 @ w2 / np.linalg.norm(w1) / np.linalg.norm(w2))
    cnn_rows, _ = run_checkpoint_metrics(run, boards, "cnn")
    assert cnn_rows["weight_norm"].iloc[1] == pytest.approx(np.linalg.norm(_np_params(s2, "cnn.")))
    # one GRU step from h0 = 0 by hand (numpy), on the eval-mode conv features
    m2.eval()
    with torch.no_grad():
        x = m2.cnn(boards).numpy().astype(np.float64)
    W, b_i, b_h = (s2[k].numpy().astype(np.float64) for k in ("gru.weight_ih_l0", "gru.bias_ih_l0", "gru.bias_hh_l0"))
    gi, H = x @ W.T + b_i, 6
    sig = lambda t: 1 / (1 + np.exp(-t))
    r, z = sig(gi[:, :H] + b_h[:H]), sig(gi[:, H:2 * H] + b_h[H:2 * H])
    h = (1 - z) * np.tanh(gi[:, 2 * H:] + r * b_h[2 * H:])
    lam = np.linalg.svd(h - h.mean(0), compute_uv=False) ** 2
    last = rows.iloc[1]
    assert last["total_variance"] == pytest.approx(lam.sum(), rel=1e-5)
    for k in range(4):
        assert last[f"top{k + 1}_ratio"] == pytest.approx(lam[k] / lam.sum(), rel=1e-4)
    assert spectrum[spectrum["epoch"] == 6]["sigma2"].to_numpy() == pytest.approx(lam, rel=1e-4, abs=1e-10)


# ---------------------------------------------------------------- end to end: train, measure, redraw

@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A 2 x 2 design, 2 seeds, 2 epochs on 6 games: trained, measured."""
    root = tmp_path_factory.mktemp("factorial")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    preset = customize(load_preset(), {"train.epochs": 2, "checkpoint.every": 1, "train.batch_size": 8, "device": "cpu",
                                       "data.options.n_games": 6, "data.options.depth": 1, "data.root": str(root / "cache")},
                       seeds=[0, 1], row_levels=[2, 4], col_levels=[3, 5])
    table = train_all(preset, root, progress=False)
    ckpt = checkpoint_dir_of(preset, root)
    assert metrics_cli(["--checkpoint-dir", str(ckpt), "--metrics-dir", str(root / "metrics"), "--board-count", "16"]) == 0
    torch.set_num_threads(n)
    return root, ckpt, preset, table


def test_training_writes_histories_and_checkpoints(tiny_study):
    root, ckpt, preset, table = tiny_study
    assert int(table["n_seeds"].sum()) == 8
    runs = sorted(p.name for p in ckpt.iterdir() if p.is_dir())
    assert runs == sorted(f"k3_c{c}_gru{h}_s{s}" for c in (2, 4) for h in (3, 5) for s in (0, 1))
    hist = pd.read_json(ckpt / "k3_c2_gru3_s0" / "training_history.json")
    assert hist["epoch"].tolist() == [1, 2] and {"train_loss", "val_loss", "train_acc", "val_acc"} <= set(hist)
    assert sorted(p.name for p in (ckpt / "k3_c2_gru3_s0" / "ckpt").iterdir()) == ["epoch001.pt", "epoch002.pt"]
    m = pd.read_csv(root / "metrics" / "k3_c4_gru5_metrics.csv")
    assert sorted(m["seed"].unique()) == [0, 1] and m["board_count"].eq(16).all()


def test_cli_redraws_and_heatmap_numbers_equal_summary(tiny_study, tmp_path):
    root, ckpt, preset, _ = tiny_study
    out = tmp_path / "figs"
    assert factorial_cli(["--metrics-dir", str(root / "metrics"), "--checkpoint-dir", str(ckpt), "--output-dir", str(out)]) == 0
    for name in ("factorial_heatmaps.png", "loss_trajectories.png", "representation_scree.png"):
        assert (out / name).stat().st_size > 5000 and (out / name).with_suffix(".csv").exists()
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 8 and set(NINE) <= set(summary)
    # the heatmap's printed numbers are the seed mean / std of summary.csv (pandas, independently)
    design = Design.from_preset(preset)
    fig = plot_factorial_heatmaps(cell_table(summary, design))
    ref = summary.groupby(["channels", "hidden"])[list(NINE)].agg(["mean", "std"])
    panels = [ax for ax in fig.axes if ax.get_title() in NINE.values()]
    assert [ax.get_title() for ax in panels] == list(NINE.values()) and len(fig.axes) == 18   # 9 panels + 9 colour bars
    assert [ax.get_ylabel() for ax in fig.axes if ax not in panels] == ["mean over seeds"] * 9     # each colour bar says what it encodes
    for ax, metric in zip(panels, NINE):
        rows = [int(t.get_text()) for t in ax.get_yticklabels()]
        cols = [int(t.get_text()) for t in ax.get_xticklabels()]
        assert len(ax.texts) == 4
        for t in ax.texts:
            x, y = t.get_position()
            mean_text, std_text = t.get_text().split("\n± ")
            for text, stat in ((mean_text, "mean"), (std_text, "std")):
                decimals = len(text.split(".")[1]) if "." in text else 0
                expected = ref.loc[(rows[int(y)], cols[int(x)]), (metric, stat)]
                assert float(text) == pytest.approx(expected, abs=0.5 * 10 ** -decimals + 1e-12)
    plt.close(fig)


def test_cli_names_missing_files_and_exits_2(tiny_study, tmp_path, capsys, monkeypatch):
    root, ckpt, _, _ = tiny_study
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    for f in (root / "metrics").glob("*.csv"):
        if f.name != "k3_c4_gru3_metrics.csv":
            (metrics / f.name).write_bytes(f.read_bytes())
    code = factorial_cli(["--metrics-dir", str(metrics), "--checkpoint-dir", str(tmp_path / "nowhere"),
                          "--output-dir", str(tmp_path / "o"), "--preset", str(ckpt / "factorial_preset.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "k3_c4_gru3_metrics.csv" in err and "k3_c2_gru5_s1/training_history.json" in err
    assert not (tmp_path / "o").exists()
    # the console-script entry point exits with that code (packaged preset: the 3 x 3 default design)
    script = Path(sys.executable).parent / "factorial"
    assert "ablation_harness.studies.factorial" in script.read_text() and "factorial_main" in script.read_text()
    monkeypatch.setattr(sys, "argv", ["factorial", "--metrics-dir", str(tmp_path / "none"), "--checkpoint-dir",
                                      str(tmp_path / "none"), "--output-dir", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as exc:
        factorial_main()
    assert exc.value.code == 2 and "k3_c16_gru8_metrics.csv" in capsys.readouterr().err


def test_project_layout_summary_has_convergence_and_flags(tiny_study, tmp_path):
    root, ckpt, _, _ = tiny_study
    assert factorial_cli(["--metrics-dir", str(root / "metrics"), "--checkpoint-dir", str(ckpt), "--output-dir", str(tmp_path),
                          "--patience", "1"]) == 0
    summary = pd.read_csv(tmp_path / "summary.csv")
    for _, r in summary.iterrows():
        h = pd.read_json(ckpt / f"{r['model']}_s{r['seed']}" / "training_history.json")
        best = h.loc[h["val_loss"].idxmin()]
        assert r["best_epoch"] == best["epoch"] and r["epochs"] == h["epoch"].max()
        assert r["passed_minimum"] == (h["epoch"].max() - best["epoch"] >= 1)
        assert r["gap_at_min"] == pytest.approx(best["val_loss"] - best["train_loss"])
        assert r["top1_limit"] == 0.30                                           # GRU 3 and 5: nearest listed size is 8
    assert summary[list(WARNINGS)].dtypes.eq(bool).all()


# ---------------------------------------------------------------- the seed's layout, as its users would type it

SEED_MODELS = [(c, h) for c in (16, 64, 256) for h in (8, 32, 128)]


def _write_seed_layout(base: Path, epochs: int = 6, skip: str | None = None) -> dict:
    """The seed's folders under `base`: checkpoints/save_every_3/<model>/training_history.json (train_loss and val_loss
    lists only) and diagnostics/trajectory_analysis/<model>_metrics.csv (repr_ columns, no seed), with values chosen
    so that each warning flag fires for exactly one model."""
    rng = np.random.default_rng(0)
    expected = {}
    for i, (c, h) in enumerate(SEED_MODELS):
        model = f"k3_c{c}_gru{h}"
        val = list(2.0 - 0.1 * np.arange(epochs) + 0.15 * np.maximum(0, np.arange(epochs) - (1 + i % 4)) ** 1.5)
        train = list(np.array(val) - 0.05 - (0.6 if model == "k3_c64_gru32" else 0.0))
        hist = base / "checkpoints" / "save_every_3" / model / "training_history.json"
        hist.parent.mkdir(parents=True)
        hist.write_text(json.dumps({"train_loss": train, "val_loss": val, "lr": 1e-3}))
        top1 = {8: 0.2, 32: 0.1, 128: 0.05}[h] + (0.1 if model == "k3_c256_gru128" else 0.0)
        norms = np.linspace(100, 2500 if model == "k3_c16_gru8" else 800, epochs)
        metrics = pd.DataFrame({"epoch": np.arange(1, epochs + 1), "weight_norm": norms,
                                "step_norm": [np.nan] + list(rng.uniform(1, 2, epochs - 1)),
                                "relative_step": [np.nan] + list(rng.uniform(0, 0.1, epochs - 1)),
                                "step_cosine": [np.nan] + list(rng.uniform(0.9, 1, epochs - 1)),
                                "repr_total_variance": rng.uniform(1, 5, epochs),
                                **{f"repr_top{k}_ratio": np.full(epochs, top1 / k) for k in (1, 2, 3, 4)}})
        path = base / "diagnostics" / "trajectory_analysis" / f"{model}_metrics.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        if model != skip:
            metrics.to_csv(path, index=False)
        best = int(np.argmin(val))
        expected[model] = {"min_val_loss": min(val), "best_epoch": best + 1, "gap": val[-1] - train[-1],
                           "passed": epochs - (best + 1) >= 3, "norm": norms[-1], "top1": top1}
    return expected


def _factorial(args, cwd):
    """The `factorial` console script in a subprocess, importing this checkout."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "MPLBACKEND": "Agg"}
    script = Path(sys.executable).parent / "factorial"
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_seed_layout_with_seed_defaults_in_a_subprocess(tmp_path, monkeypatch):
    expected = _write_seed_layout(tmp_path)
    proc = _factorial([], tmp_path)                                           # the seed's default folders
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "visualizations"
    for name in ("factorial_heatmaps.png", "loss_trajectories.png", "representation_scree.png"):
        assert (out / name).stat().st_size > 5000
    summary = pd.read_csv(out / "summary.csv").set_index("model")
    assert sorted(summary.index) == sorted(expected) and (summary["seed"] == 0).all()
    for model, e in expected.items():
        r = summary.loc[model]
        assert r["min_val_loss"] == pytest.approx(e["min_val_loss"]) and r["train_val_gap"] == pytest.approx(e["gap"])
        assert r["best_epoch"] == e["best_epoch"] and r["passed_minimum"] == e["passed"]
        assert r["final_weight_norm"] == pytest.approx(e["norm"]) and r["mean_top1_ratio"] == pytest.approx(e["top1"])
    flagged = {flag: sorted(summary.index[summary[flag]]) for flag in WARNINGS}
    assert flagged == {"warn_top1_ratio": ["k3_c256_gru128"], "warn_train_val_gap": ["k3_c64_gru32"],
                       "warn_weight_norm": ["k3_c16_gru8"]}
    scree = pd.read_csv(out / "representation_scree.csv")                     # no spectrum files: the top-4 ratios
    assert sorted(scree["k"].unique()) == [1, 2, 3, 4]
    # the seed's documented command line, with its folders (in process: the subprocess above covered the entry point)
    (tmp_path / "diagnostics" / "trajectory_analysis").rename(tmp_path / "diagnostics" / "checkpoint_metrics")
    monkeypatch.chdir(tmp_path)
    assert factorial_cli(["--metrics-dir", "diagnostics/checkpoint_metrics", "--checkpoint-dir", "checkpoints/save_every_3",
                          "--output-dir", "visualizations/factorial"]) == 0
    assert pd.read_csv("visualizations/factorial/summary.csv").equals(pd.read_csv(out / "summary.csv"))


def test_seed_layout_missing_file_is_named_in_one_line(tmp_path):
    _write_seed_layout(tmp_path, skip="k3_c64_gru128")
    (tmp_path / "checkpoints" / "save_every_3" / "k3_c16_gru32" / "training_history.json").unlink()
    proc = _factorial([], tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "k3_c64_gru128_metrics.csv" in lines[0] and "k3_c16_gru32/training_history.json" in lines[0]
    assert not (tmp_path / "visualizations").exists()


def test_read_history_accepts_the_seed_format(tmp_path):
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"train_loss": [3.0, 2.0], "val_loss": [3.1, 2.5], "config": {"lr": 1}, "best": 2.5}))
    h = read_history(path)
    assert h["epoch"].tolist() == [1, 2] and list(h.columns) == ["train_loss", "val_loss", "epoch"]
    path.write_text(json.dumps({"loss": [1.0]}))
    with pytest.raises(UserError, match="val_loss"):
        read_history(path)


# ---------------------------------------------------------------- early stopping and the claim statistics

def test_early_stop_stops_after_patience_epochs_without_improvement():
    cb, trainer = EarlyStop(patience=2), SimpleNamespace(history=[], stop_training=False)
    cb.on_fit_start(trainer)
    stopped_at = None
    for epoch, v in enumerate([3.0, 2.0, 2.5, 1.9, 1.95, 2.1, 1.0], start=1):
        trainer.history.append({"epoch": epoch, "val/loss": v})
        cb.on_epoch_end(trainer)
        if trainer.stop_training:
            stopped_at = epoch
            break
    assert stopped_at == 6                                                    # best at epoch 4, then 2 epochs without
    with pytest.raises(ValueError):
        EarlyStop(patience=0)


def test_early_stop_in_a_training_run(tmp_path):
    cfg = RunConfig.model_validate({"model": {"name": "cnn_gru", "channels": 2, "hidden": 3}, "device": "cpu",
                                    "data": {"name": "connect4", "normalize": False, "root": str(tmp_path / "cache"),
                                             "options": {"n_games": 6, "depth": 1}},
                                    "train": {"epochs": 40, "batch_size": 4, "progress": False},
                                    "optim": {"name": "adam", "lr": 0.05},
                                    "checkpoint": {"best": False, "last": False},
                                    "callbacks": [{"name": "early_stop", "patience": 1}]})
    res = run(cfg, POLICY_VALUE, root=tmp_path)
    vals = [h["val/loss"] for h in res.trainer.history]
    assert len(vals) < 40 and vals[-1] >= min(vals[:-1])                       # stopped on the first non-improvement


def test_best_vs_worst_matches_a_hand_built_tukey_interval():
    rng = np.random.default_rng(1)
    df = pd.DataFrame([{"model": f"m{i}", "seed": s, "y": 0.05 * i + rng.normal(0, 0.03)} for i in range(6) for s in range(3)])
    r = best_vs_worst(df, "y")
    means = df.groupby("model")["y"].mean()
    assert (r["best"], r["worst"]) == (means.idxmin(), means.idxmax())
    mse = df.groupby("model")["y"].var(ddof=1).mean()                           # balanced: pooled variance
    q = stats.studentized_range.ppf(0.95, 6, len(df) - 6)
    half = q * np.sqrt(mse / 3)
    est = means.min() - means.max()
    assert r["estimate"] == pytest.approx(est) and r["ci"] == pytest.approx([est - half, est + half], rel=1e-4)


def test_factor_contrast_matches_least_squares():
    df = _table(lambda i, j: 0.3 * i + [0.0, -0.2, -0.5][j], seeds=3, noise=0.05, seed=3).rename(
        columns={"r": "channels", "c": "hidden"})
    df["model"] = df["channels"].astype(str) + "_" + df["hidden"].astype(str)
    X = pd.get_dummies(df["model"], dtype=float)                                 # cell-means model
    y = df["value"].to_numpy()
    beta, *_ = np.linalg.lstsq(X.to_numpy(), y, rcond=None)
    dof = len(y) - X.shape[1]
    mse = np.sum((y - X.to_numpy() @ beta) ** 2) / dof
    w = np.array([(1 if h == 128 else -1 if h == 8 else 0) / 3 for h in X.columns.str.split("_").str[1].astype(int)])
    est, se = w @ beta, np.sqrt(mse * w @ np.linalg.inv(X.T.to_numpy() @ X.to_numpy()) @ w)
    half = stats.t.ppf(0.975, dof) * se
    r = factor_contrast(df, *Design().axis_names("col"), "value")
    assert (r["high"], r["low"], r["dof"]) == (128, 8, dof)
    assert r["estimate"] == pytest.approx(est) and r["ci"] == pytest.approx([est - half, est + half])


@pytest.mark.parametrize("F", [0.3, 2.0, 3.4, 12.0])
def test_partial_eta_squared_inverts_the_noncentral_f(F):
    eta, lo, hi = partial_eta_squared(F, 4, 18)
    assert eta == pytest.approx(F * 4 / (F * 4 + 18))
    lam = lambda e: e * (4 + 18 + 1) / (1 - e)
    p = stats.f.sf(F, 4, 18)
    assert (lo > 0) == (p < 0.025) and (hi > 0) == (p < 0.975)
    if lo > 0:
        assert stats.ncf.cdf(F, 4, 18, lam(lo)) == pytest.approx(0.975, abs=1e-6)
    if hi > 0:
        assert stats.ncf.cdf(F, 4, 18, lam(hi)) == pytest.approx(0.025, abs=1e-6)
    assert [limit_side(ci, 0.5) for ci in ([0.1, 0.4], [0.6, 0.9], [0.4, 0.6], [None, 0.4])] == ["below", "above", "across", "across"]
