"""studies.factorial: two-way decomposition, heatmap annotations, CLI redraw, masked loss, checkpoint metrics."""
import sys
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
from ablation_harness.models import CNNGRU
from ablation_harness.train import save_checkpoint
from ablation_harness.studies.factorial import (
    MASK, NINE, Design, cell_table, checkpoint_dir_of, customize, factorial_cli, factorial_main, load_preset, masked_loss,
    masked_metrics, metrics_cli, plot_factorial_heatmaps, run_checkpoint_metrics, train_all, two_way)


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
        if f.name != "k3_c4_gru3_spectrum.csv":
            (metrics / f.name).write_bytes(f.read_bytes())
    code = factorial_cli(["--metrics-dir", str(metrics), "--checkpoint-dir", str(tmp_path / "nowhere"),
                          "--output-dir", str(tmp_path / "o"), "--preset", str(ckpt / "factorial_preset.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and "k3_c4_gru3_spectrum.csv" in err and "k3_c2_gru5_s1/training_history.json" in err
    assert not (tmp_path / "o").exists()
    # the console-script entry point exits with that code (packaged preset: the 3 x 3 default design)
    script = Path(sys.executable).parent / "factorial"
    assert "ablation_harness.studies.factorial" in script.read_text() and "factorial_main" in script.read_text()
    monkeypatch.setattr(sys, "argv", ["factorial", "--metrics-dir", str(tmp_path / "none"), "--checkpoint-dir",
                                      str(tmp_path / "none"), "--output-dir", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as exc:
        factorial_main()
    assert exc.value.code == 2 and "k3_c16_gru8_metrics.csv" in capsys.readouterr().err
