"""sinks read back through their own readers; runs -> DataFrames; plots by the data they draw."""
import numpy as np
import pandas as pd
import pytest

from ablation_harness.plots import ema_debiased, plot_curves, save_figure
from ablation_harness.runs import load_metrics, load_summaries
from ablation_harness.sinks import read_wandb_offline
from ablation_harness.train import run


def test_tensorboard_and_wandb_hold_the_logged_values(tmp_path, tiny_cfg):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tiny_cfg.sinks.tensorboard = True
    tiny_cfg.sinks.wandb = True
    res = run(tiny_cfg, root=tmp_path)
    df = load_metrics(res.run_dir.path)
    losses = df[(df.metric == "loss") & (df.split == "train")].sort_values("step")
    acc = EventAccumulator(str(res.run_dir.path / "tb"))
    acc.Reload()
    tb = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert [s for s, _ in tb] == losses.step.tolist()
    assert np.allclose([v for _, v in tb], losses.value, rtol=1e-6)
    history, summary = read_wandb_offline(res.run_dir.path)
    wb = [h["train/loss"] for h in history if "train/loss" in h]
    assert np.allclose(wb, losses.value)
    assert summary["final/val/acc"] == pytest.approx(res.summary["final/val/acc"])


def test_load_metrics_over_many_runs(tmp_path, tiny_cfg):
    for s in (0, 1):
        tiny_cfg.seed = s
        run(tiny_cfg, root=tmp_path)
    df = load_metrics(tmp_path)
    assert df.run_id.nunique() == 2
    assert list(df.columns[:7]) == ["run_id", "step", "epoch", "split", "metric", "layer", "value"]
    sums = load_summaries(tmp_path)
    assert set(sums["cfg.seed"]) == {0, 1} and (sums.status == "complete").all()


def test_ema_debiased_matches_tensorboard_definition():
    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0])
    a = 0.6
    expect, num, den = [], 0.0, 0.0
    for v in x:  # weighted average with weights a^(t-i): the closed form of the debiased EMA
        num = a * num + v
        den = a * den + 1
        expect.append(num / den)
    assert np.allclose(ema_debiased(x, a), expect)
    assert np.allclose(ema_debiased(x, 0.0), x)


def test_plot_curves_draws_the_smoothed_data(tmp_path):
    df = pd.DataFrame({"run_id": ["r1"] * 5 + ["r2"] * 5, "step": list(range(5)) * 2,
                       "metric": "loss", "value": [5, 4, 3, 2, 1, 1, 1, 2, 2, 3]})
    fig = plot_curves(df, ema=0.5)
    lines = fig.axes[0].get_lines()
    assert [l.get_label() for l in lines] == ["r1", "r2"]
    assert np.allclose(lines[0].get_ydata(), ema_debiased([5, 4, 3, 2, 1], 0.5))
    out = save_figure(fig, tmp_path / "loss", df)
    assert out.suffix == ".png" and out.stat().st_size > 1000
    assert pd.read_csv(tmp_path / "loss.csv").shape == df.shape
    with pytest.raises(ValueError, match="missing columns"):
        plot_curves(df.drop(columns="value"))
