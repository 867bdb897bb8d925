"""studies.optimization_insight: sign colours vs thresholds, the raw window recorder, dead units, TensorBoard
per-epoch means and gradient histograms, tables and figures."""
import json

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ablation_harness.config import RunConfig
from ablation_harness.core import read_jsonl
from ablation_harness.metrics.activations import capture
from ablation_harness.metrics.callbacks import GradHistogramsCallback
from ablation_harness.metrics.gradients import GradientDynamics
from ablation_harness.runs import load_metrics
from ablation_harness.train import Callback, run
from ablation_harness.metrics.callbacks import DEAD_UNITS, WINDOW, GradSignWindow, find_callback, read_window
from ablation_harness.metrics.gradients import dead_unit_counts, sign_categories
from ablation_harness.studies.optimization_insight import (
    SIGN_COLORS, epoch_means, grad_table, logged_epoch_means, plot_extrema, plot_grad_metric, plot_sign_map,
    plot_sign_window, resolve_dataset, seed_numbers, sign_rgb, window_span)

TH = 1e-5
WHITE, RED, GREEN, GREY = SIGN_COLORS


def expected_color(g):
    """The seed's rule, written out entry by entry: white above the threshold, red/green below by sign."""
    if abs(g) > TH:
        return WHITE
    if g < 0:
        return RED
    if g > 0:
        return GREEN
    return GREY


GRAD = [3e-4, -3e-4, 1.0000001e-5, -1.0000001e-5, 1e-5, -1e-5, 4e-6, -4e-6, 0.0, 1e-9]


def test_sign_colours_match_thresholds_through_the_library_summary():
    net = torch.nn.Sequential(torch.nn.Linear(4, 2)).double()      # one layer "0": 8 weights + 2 biases
    g = torch.tensor(GRAD, dtype=torch.float64)
    net[0].weight.grad, net[0].bias.grad = g[:8].reshape(2, 4).clone(), g[8:].clone()
    tracker = GradientDynamics(net, small_threshold=TH)
    tracker.update()
    frac = tracker.sign_summary(bins=10).numpy()          # one layer, one entry per bin
    rgb = sign_rgb(frac)[0]
    for value, colour in zip(GRAD, rgb):
        assert np.allclose(colour, expected_color(value)), value
    fig = plot_sign_map(frac[None], ["lin"], [1], steps_per_epoch=1, layer_sizes=[10], small_threshold=TH)
    drawn = fig.axes[0].images[0].get_array()
    assert drawn.shape == (1, 10, 3) and np.allclose(drawn[0], [expected_color(v) for v in GRAD])
    plt.close(fig)


def test_window_categories_and_colormap_match_thresholds():
    cats = sign_categories(GRAD, TH)
    assert list(cats) == [0, 0, 0, 0, 2, 1, 2, 1, 3, 2]
    fig = plot_sign_window(np.array([GRAD, GRAD[::-1]]), [1, 2], steps_per_epoch=2, small_threshold=TH)
    im = fig.axes[0].images[0]
    assert np.array_equal(im.get_array(), [cats, cats[::-1]])
    shown = im.cmap(im.norm(np.asarray(im.get_array(), dtype=float)))[..., :3]
    assert np.allclose(shown[0], [expected_color(v) for v in GRAD])
    plt.close(fig)


def test_mixed_bin_colour_is_the_proportional_mix():
    assert np.allclose(sign_rgb([0.5, 0.5, 0.0]), (WHITE + RED) / 2)
    assert np.allclose(sign_rgb([0.0, 0.25, 0.25]), (RED + GREEN) / 4 + GREY / 2)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models train fastest on one intra-op thread (and far faster on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class FullGrad(Callback):
    """Copies the whole gradient of one parameter after every backward pass."""
    def __init__(self, name):
        self.name, self.g = name, []

    def on_after_backward(self, trainer):
        self.g.append(dict(trainer.model.named_parameters())[self.name].grad.detach().reshape(-1).clone())


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    cfg = RunConfig.model_validate({
        "study": "oi", "device": "cpu", "seed": 2, "name": "oi_run",
        "data": {"name": "digits", "n_train": 256, "n_val": 128},
        "model": {"name": "mlp", "width": 16, "depth": 2},
        "train": {"epochs": 2, "batch_size": 64, "progress": False},
        "sinks": {"tensorboard": True},
        "callbacks": [{"name": "grad_dynamics", "every": 1, "sign_bins": 8, "epoch_means": True},
                      {"name": "grad_histograms", "every": 3},
                      {"name": "grad_sign_window", "param": "body.fc1.weight", "size": 64, "candidates": 3,
                       "align": 64},
                      {"name": "dead_units", "linear": "body.fc1", "inputs": "body.flat", "units": "body.relu1"}]})
    full = FullGrad("body.fc1.weight")
    res = run(cfg, extra_callbacks=[full], root=tmp_path_factory.mktemp("oi"))
    return res, full


def test_window_recorder_copies_the_gradient_and_picks_the_densest(tracked):
    res, full = tracked
    win = find_callback(res.trainer, GradSignWindow)
    assert win.starts == [0, 448, 960] and win.steps == list(range(1, 9))
    G = torch.stack(full.g).numpy()
    for k, s in enumerate(win.starts):
        assert np.array_equal(win.array(k), G[:, s:s + 64])
    counts = [((np.abs(G[:, s:s + 64]) <= TH) & (G[:, s:s + 64] != 0)).sum() for s in win.starts]
    assert win.densest(TH) == int(np.argmax(counts))
    assert window_span(res.trainer.model, "body.fc1.bias", 0, 16, ["body.fc1", "body.fc2", "head"],
                       [64 * 16 + 16, 16 * 16 + 16, 16 * 10 + 10]) == (0, 1024 / 1040, 1.0)
    saved = read_window(res.run_dir.path / WINDOW)      # the densest window, as the run directory keeps it
    k = win.densest(TH)
    assert saved["start"] == win.starts[k] and saved["param"] == "body.fc1.weight"
    assert np.array_equal(saved["values"], G[:, win.starts[k]:win.starts[k] + 64])
    assert list(saved["steps"]) == win.steps


def test_tensorboard_holds_epoch_means_and_gradient_histograms(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    res, full = tracked
    assert GradHistogramsCallback().every == 30                      # the seed's default: every 30 batches
    ea = EventAccumulator(str(res.run_dir.path / "tb"), size_guidance={"scalars": 0, "histograms": 0})
    ea.Reload()
    # per-epoch means: one point per epoch at its last step (256 images / 64 = 4 steps per epoch), equal to the
    # mean of the per-step rows of that epoch in metrics.jsonl
    rows = pd.DataFrame(read_jsonl(res.run_dir.path / "metrics.jsonl"))
    steps = rows[rows["split"] == "train"]
    for metric, layer in [("zero_count", None), ("frac_released", "body.fc1"), ("update_norm", "head")]:
        tag = f"epoch_mean/grad/{metric}" + (f"/{layer}" if layer else "")
        events = ea.Scalars(tag)
        assert [e.step for e in events] == [4, 8]
        sub = steps[(steps["metric"] == f"grad/{metric}") & (steps["layer"].isna() if layer is None else steps["layer"] == layer)]
        expect = sub.groupby("epoch")["value"].mean().to_numpy()
        assert np.allclose([e.value for e in events], expect, rtol=1e-6)
    # histograms: every parameter's gradient at steps 3 and 6 (8 steps in all), matching the gradient itself
    params = [n for n, _ in res.trainer.model.named_parameters()]
    assert set(ea.Tags()["histograms"]) == {f"grad/{n}" for n in params}
    hist = ea.Histograms("grad/body.fc1.weight")
    assert [h.step for h in hist] == [3, 6]
    for h in hist:
        g = full.g[h.step - 1].double()
        v = h.histogram_value
        assert v.num == g.numel() and v.sum == pytest.approx(g.sum().item(), abs=1e-6)
        assert (v.min, v.max) == pytest.approx((g.min().item(), g.max().item()), rel=1e-6)


def test_logged_epoch_means_match_the_per_step_rows(tracked):
    res, _ = tracked
    m = load_metrics(res.run_dir.path)
    grads = grad_table(m)
    assert set(grads["step"]) == set(range(1, 9))                    # per-step rows only, no epoch means
    for metric in ("zero_count", "frac_flipped"):
        a = logged_epoch_means(m, metric).sort_values(["epoch", "layer"]).reset_index(drop=True)
        b = epoch_means(grads, metric).sort_values(["epoch", "layer"]).reset_index(drop=True)
        assert a[["epoch", "layer"]].equals(b[["epoch", "layer"]]) and np.allclose(a["value"], b["value"])


def test_dead_units_predict_the_exact_zeros_of_the_gradient():
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    x = torch.randn(16, 6, generator=g).relu()
    x[:, [1, 4]] = 0                                                  # two inputs dead for the whole batch
    with torch.no_grad():
        net[0].bias[[0, 3]] = -100.0                                  # two units dead for every sample ...
        net[0].bias[[1, 2, 4]] = 100.0                                # ... and three alive for every sample
    torch.nn.functional.cross_entropy(net(x), torch.randint(0, 3, (16,), generator=g)).backward()
    measured = int((net[0].weight.grad == 0).sum() + (net[0].bias.grad == 0).sum())
    acts = capture(net, x, ["1"])
    counts = dead_unit_counts(x, acts["1"])
    assert (counts["dead_units"], counts["dead_inputs"], counts["dead_unit_ids"]) == (2, 2, [0, 3])
    assert counts["predicted_zero_grads"] == measured == 2 * 7 + 2 * 3


def test_seed_numbers_from_the_run_directory(tracked):
    res, _ = tracked
    d = res.run_dir.path
    nums = seed_numbers(d)
    rows = pd.DataFrame(read_jsonl(d / "metrics.jsonl"))
    model = rows[(rows["split"] == "train") & rows["layer"].isna()]
    last = model[model["epoch"] == model["epoch"].max()]
    params = sum(p.numel() for p in res.trainer.model.parameters())
    assert nums["params"] == params and nums["steps"] == 8 and nums["epochs"] == 2
    assert nums["zero_share"] == pytest.approx(last[last["metric"] == "grad/zero_count"]["value"].mean() / params)
    rel = model[model["metric"] == "grad/frac_released"]
    assert nums["released_mean"] == pytest.approx(rel["value"].mean())
    assert nums["released_first_epoch"] == pytest.approx(rel[rel["epoch"] == 0]["value"].mean())
    dead = json.loads((d / DEAD_UNITS).read_text())
    fc1_zeros = rows[(rows["metric"] == "grad/zero_count") & (rows["layer"] == "body.fc1") & (rows["step"] == 8)
                     & (rows["split"] == "train")]["value"].item()
    assert nums["layer_zero_grads"] == fc1_zeros
    assert nums["zeros_explained"] == pytest.approx(dead["predicted_zero_grads"] / max(fc1_zeros, 1.0))
    val = rows[(rows["split"] == "val") & (rows["metric"] == "loss")]["value"].tolist()
    assert nums["val_loss"] == pytest.approx(val) and len(val) == 2


def test_grad_table_and_epoch_means_against_pandas(tracked):
    res, _ = tracked
    raw = load_metrics(res.run_dir.path)
    grads = grad_table(raw)
    raw = raw[raw["split"] == "train"]                               # the per-step rows (not the epoch means)
    zc = raw[(raw["metric"] == "grad/zero_count") & raw["layer"].isna()]
    mine = grads[(grads["metric"] == "zero_count") & (grads["layer"] == "model")]
    assert np.array_equal(mine["value"].to_numpy(), zc["value"].to_numpy())
    em = epoch_means(grads, "frac_released")
    sub = raw[(raw["metric"] == "grad/frac_released") & (raw["layer"] == "body.fc1")]
    ref = sub.groupby("epoch")["value"].mean()
    got = em[em["layer"] == "body.fc1"].set_index("epoch")["value"]
    assert np.allclose(got.loc[ref.index + 1].to_numpy(), ref.to_numpy())


def test_grad_metric_and_extrema_figures_draw_their_data():
    df = pd.DataFrame({"step": [1, 2, 3, 1, 2, 3], "layer": ["model"] * 3 + ["a"] * 3,
                       "value": [0.0, 2.0, 4.0, 1.0, 3.0, 5.0]})
    fig = plot_grad_metric(df, ylabel="v", logy=True, layers=["model", "a"])
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    y = np.asarray(lines["whole model"].get_ydata(), dtype=float)
    assert np.isnan(y[0]) and np.allclose(y[1:], [2.0, 4.0])               # the zero is a gap on the log scale
    assert np.allclose(lines["a"].get_xdata(), [1, 2, 3]) and np.allclose(lines["a"].get_ydata(), [1, 3, 5])
    assert "zeros not shown" in fig.axes[0].get_ylabel()
    plt.close(fig)

    ev = pd.DataFrame({"step": [2, 2, 3, 3] * 2, "layer": ["model"] * 4 + ["a"] * 4,
                       "metric": ["local_min", "local_max"] * 4, "value": [5, 1, 7, 2, 5, 1, 7, 2]})
    fig = plot_extrema(ev)
    a1, a2 = fig.axes[:2]
    ys = {ln.get_label().split(":")[0]: ln.get_ydata() for ln in a1.get_lines()}
    assert np.allclose(ys["local minimum"], [5, 7]) and np.allclose(ys["local maximum"], [1, 2])
    assert sorted(p.get_width() for p in a2.patches) == [3, 12]
    plt.close(fig)


def test_resolve_dataset_uses_cifar_only_when_on_disk(tmp_path):
    assert resolve_dataset("mnist1d", root=str(tmp_path)) == "mnist1d"
    assert resolve_dataset("auto", root=str(tmp_path)) == "mnist"
    (tmp_path / "cifar-10-batches-py").mkdir()
    assert resolve_dataset("auto", root=str(tmp_path)) == "cifar10"


def test_plateau_stop_ends_training_at_the_first_plateau(tmp_path):
    from ablation_harness.stats import plateaued
    from ablation_harness.train import PlateauStop
    cfg = RunConfig.model_validate({
        "study": "oi", "device": "cpu", "seed": 0, "name": "stop",
        "data": {"name": "digits", "n_train": 256, "n_val": 128},
        "model": {"name": "mlp", "width": 16, "depth": 1}, "optim": {"lr": 0.05},
        "train": {"epochs": 40, "batch_size": 64, "progress": False},
        "callbacks": [{"name": "plateau_stop", "window": 2, "rel_tol": 0.05}]})
    res = run(cfg, root=tmp_path)
    losses = [h["val/loss"] for h in res.trainer.history]
    assert res.status == "complete" and 3 <= len(losses) < 40           # stopped early, and completed
    assert plateaued(losses, 2, 0.05)                                   # at a plateau ...
    assert not any(plateaued(losses[:k], 2, 0.05) for k in range(1, len(losses)))   # ... the first one
    cb = find_callback(res.trainer, PlateauStop)
    assert cb.converged and cb.plateau_epoch == len(losses) and res.summary["converged"] is True
