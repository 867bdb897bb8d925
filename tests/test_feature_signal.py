"""studies.feature_signal: correlation callback and its files, the augmentation probe against numpy,
invariance, figures, and the experiment's seed-named files and claims."""
import json
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ablation_harness.config import RunConfig
from ablation_harness.core import read_jsonl
from ablation_harness.data import load_data
from ablation_harness.stats import read_headline
from ablation_harness.train import Callback, run
from ablation_harness.core import torch_threads
from ablation_harness.metrics.callbacks import LayerCorrelation
from ablation_harness.metrics.invariance import (AUGMENTATION, INVARIANCE, INVARIANCE_REFERENCE, augmented_views,
                                                 layer_scores, pick_per_class, summarize_invariance, to_inputs, to_pixels)
from ablation_harness.metrics.representation import (CORR_MATRICES, CORR_MEANS, corr_means_frame, mean_offdiagonal,
                                                     read_corr_matrices, read_corr_means)
from ablation_harness.stats import seed_claim, trend
from ablation_harness.studies.feature_signal import (
    plot_augmentation_grid, plot_corr_evolution, plot_intra_correlation, plot_invariance, plot_layer_correlation_grid,
    plot_per_layer_seeds, seed_numbers, write_images)

NOTEBOOK = Path(__file__).resolve().parents[1] / "nbs" / "experiments" / "feature_signal.ipynb"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models train fastest on one intra-op thread (and far faster on a busy machine)."""
    with torch_threads(1):
        yield


def _cfg(epochs=3):
    return RunConfig.model_validate({
        "study": "fs", "device": "cpu", "seed": 1, "name": "fs_run",
        "data": {"name": "digits", "n_train": 300, "n_val": 150},
        "model": {"name": "mlp", "width": 16, "depth": 2, "batchnorm": True},
        "train": {"epochs": epochs, "batch_size": 64, "progress": False, "analysis_batch_size": 100},
        "callbacks": [{"name": "layer_correlation"}]})


class RowSpy(Callback):
    """Records, right after each epoch-start analysis, how many analyses the callback has run and logged."""
    def __init__(self):
        self.sizes, self.logged = [], []

    def on_epoch_start(self, trainer):
        cb = next(c for c in trainer.callbacks if isinstance(c, LayerCorrelation))
        self.sizes.append(len(cb.entries))
        self.logged.append(cb.entries[-1]["means"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("fs")
    spy = RowSpy()
    res = run(_cfg(), extra_callbacks=[spy], root=root)
    return root, res, spy


def test_self_correlation_has_unit_diagonal_and_matches_numpy(trained):
    _, res, _ = trained
    cb = next(c for c in res.trainer.callbacks if isinstance(c, LayerCorrelation))
    layers = list(dict.fromkeys(a for a, _ in cb.last))
    assert len(cb.last) == len(layers) * (len(layers) + 1) // 2
    for name in layers:
        assert np.allclose(np.diag(cb.last[(name, name)].numpy()), 1.0, atol=1e-5)
    # one cross pair against numpy.corrcoef on independently captured activations
    model, x = res.trainer.model.eval(), res.trainer.analysis_batch[0]
    with torch.no_grad():
        h1 = model.body.fc1(model.body.flat(x)).numpy()
        h2 = model.head(model.body(x)).numpy()
    d1 = h1.shape[1]
    ref = np.corrcoef(h1.T, h2.T)[:d1, d1:]
    assert np.allclose(cb.last[("body.fc1", "head")].numpy(), ref, atol=1e-4)
    first, last = read_corr_matrices(res.run_dir.file(CORR_MATRICES))   # the file holds the same matrices
    assert set(first) == set(last) == set(cb.last)
    assert all(torch.equal(last[k], cb.last[k]) and torch.equal(first[k], cb.first[k]) for k in cb.last)


def test_corr_means_holds_one_entry_per_analysis_and_survives_a_restart(trained, tmp_path):
    root, res, spy = trained
    path = res.run_dir.file(CORR_MEANS)
    first = json.loads(path.read_text())
    assert spy.sizes == [1, 2, 3]                       # one analysis logged at each epoch start
    assert [e["means"] for e in first[:3]] == spy.logged
    assert [e["epoch"] for e in first] == [0, 1, 2, 3]  # ... plus one after the last epoch
    assert [e["event"] for e in first] == ["epoch_start"] * 3 + ["fit_end"]
    n_pairs = len(first[0]["means"])
    logged = [r for r in read_jsonl(res.run_dir.file("metrics.jsonl")) if r["metric"] == "mean_abs_corr"]
    assert len(logged) == 4 * n_pairs
    # a second run in (a copy of) the same run directory appends; the earlier entries are untouched
    copy = tmp_path / "fs"
    shutil.copytree(root, copy)
    res2 = run(_cfg(epochs=2), root=copy, exist_ok=True)
    assert res2.run_dir.path == copy / res.run_dir.path.relative_to(root)
    again = read_corr_means(res2.run_dir.file(CORR_MEANS))
    assert again[:4] == first and len(again) == 7
    assert [e["index"] for e in again] == list(range(7))
    assert not list(res2.run_dir.path.glob(f".{CORR_MEANS}*.tmp"))
    df = corr_means_frame(again)
    assert len(df) == 7 * n_pairs and (df["mean_abs_corr"].between(0, 1)).all()


def _digit_like():
    img = torch.zeros(1, 28, 28)
    img[0, 6:22, 12:16] = 1.0
    img[0, 6:9, 8:20] = 0.8
    return img


def test_300_augmentations_are_reproducible_distinct_and_leave_global_state_alone():
    img = _digit_like()
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = augmented_views(img, 300, seed=7)
    assert torch.equal(torch.rand(3), expected_next)       # the global generator did not move
    assert torch.get_num_threads() == threads
    b = augmented_views(img, 300, seed=7)
    c = augmented_views(img, 300, seed=8)
    assert a.shape == (300, 1, 28, 28) and torch.equal(a, b) and not torch.equal(a, c)
    flat = a.flatten(1)
    assert len(torch.unique(flat, dim=0)) == 300
    assert not any(torch.equal(v, img) for v in a)


def test_torch_threads_restores_on_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError
    assert torch.get_num_threads() == before


def test_invariance_score_against_numpy():
    g = torch.Generator().manual_seed(0)
    c = torch.rand(6, 6, generator=g)
    off = ~np.eye(6, dtype=bool)
    assert mean_offdiagonal(c) == pytest.approx(c.numpy()[off].mean(), rel=1e-6)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5))
    x = torch.randn(12, 1, 4, 4, generator=g)
    scores = layer_scores(model, x, ["1"])
    with torch.no_grad():
        h = model(x).numpy()
    ref_out = np.corrcoef(h)[~np.eye(12, dtype=bool)].mean()
    ref_in = np.corrcoef(x.flatten(1).numpy())[~np.eye(12, dtype=bool)].mean()
    assert scores["input"] == pytest.approx(ref_in, abs=1e-5) and scores["1"] == pytest.approx(ref_out, abs=1e-5)
    same = layer_scores(model, x[:1].repeat(5, 1, 1, 1), ["1"])   # identical views: perfectly invariant
    assert same["1"] == pytest.approx(1.0, abs=1e-5)


def test_grid_draws_absolute_matrices_with_their_means():
    g = np.random.default_rng(0)
    mats = {("a", "a"): np.corrcoef(g.normal(size=(4, 30))), ("a", "b"): g.uniform(-1, 1, (4, 3)),
            ("b", "b"): np.corrcoef(g.normal(size=(3, 30)))}
    fig = plot_layer_correlation_grid(mats)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 3
    drawn = {ax.get_title().split("\n")[0]: ax for ax in panels}
    for (a, b), m in mats.items():
        ax = drawn[f"{a} × {b}"]
        assert np.allclose(ax.images[0].get_array(), np.abs(m))
        absm = np.abs(m)
        mean = absm[~np.eye(len(m), dtype=bool)].mean() if a == b else absm.mean()
        assert f"{mean:.3f}" in ax.get_title()
        assert ax.images[0].norm.vmin == 0 and ax.images[0].norm.vmax == 1
    plt.close(fig)


def test_evolution_lines_carry_the_history():
    df = pd.DataFrame({"epoch": [0, 1, 2] * 3, "layer_i": ["x"] * 6 + ["y"] * 3,
                       "layer_j": ["x"] * 3 + ["y"] * 6, "mean_abs_corr": np.linspace(0.1, 0.9, 9)})
    fig = plot_corr_evolution(df)
    lines = {(ax.get_title(), ln.get_label()): ln for ax in fig.axes for ln in ax.get_lines()}
    assert np.allclose(lines[("x with ...", "y")].get_ydata(), df["mean_abs_corr"][3:6])
    assert np.allclose(lines[("y with ...", "y (self, off-diag.)")].get_xdata(), [0, 1, 2])
    plt.close(fig)


def test_intra_invariance_and_augmentation_figures_draw_their_data():
    g = np.random.default_rng(1)
    m = np.corrcoef(g.normal(size=(5, 40)))
    fig = plot_intra_correlation({"p": m})
    ax = next(a for a in fig.axes if a.images)
    assert np.allclose(ax.images[0].get_array(), m) and ax.images[0].norm.vmin == -1
    assert f"{m[~np.eye(5, dtype=bool)].mean():.3f}" in ax.get_title()
    plt.close(fig)

    scores = pd.DataFrame({"digit": [0, 0, 1, 1], "label": [0, 0, 1, 1], "layer": ["input", "fc1"] * 2,
                           "score": [0.2, 0.5, 0.4, 0.7]})
    summary = summarize_invariance(scores, pd.DataFrame({"layer": ["input", "fc1"], "score": [0.1, 0.0]}))
    assert np.allclose(summary["mean"], [0.3, 0.6]) and np.allclose(summary["std"], [np.std([0.2, 0.4], ddof=1)] * 2)
    fig = plot_invariance(summary, scores)
    ax = fig.axes[0]
    ys = [(ln.get_label(), np.asarray(ln.get_ydata(), dtype=float)) for ln in ax.get_lines()]
    assert any(l == "different test images (reference)" and np.allclose(y, [0.1, 0.0]) for l, y in ys)
    sd = np.std([0.2, 0.4], ddof=1)
    for target in ([0.3, 0.6], [0.3 - sd, 0.6 - sd], [0.3 + sd, 0.6 + sd]):   # means and error-bar caps
        assert any(len(y) == 2 and np.allclose(y, target) for _, y in ys)
    assert np.allclose(np.sort(ax.collections[0].get_offsets()[:, 1]), np.sort(scores["score"]))
    plt.close(fig)

    imgs = torch.rand(5, 1, 6, 6)
    fig = plot_augmentation_grid(imgs[1:], original=imgs[0], ncols=3)
    shown = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert len(shown) == 5 and all(np.allclose(s, i[0].numpy()) for s, i in zip(shown, imgs))
    plt.close(fig)


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    cfg = RunConfig.model_validate({
        "study": "fs", "device": "cpu", "seed": 2, "name": "probe",
        "data": {"name": "mnist", "n_train": 400, "n_val": 200},
        "model": {"name": "mlp", "width": 16, "depth": 2, "batchnorm": True},
        "train": {"epochs": 2, "batch_size": 64, "progress": False, "analysis_batch_size": 100},
        "callbacks": [{"name": "layer_correlation"},
                      {"name": "augmentation_probe", "n_views": 30, "digits_per_class": 1, "invariance_views": 20}]})
    return cfg, run(cfg, root=tmp_path_factory.mktemp("probe"))


def test_augmentation_probe_matches_numpy_on_regenerated_views(probed):
    cfg, res = probed
    d, model = res.run_dir.path, res.trainer.model.eval()
    data = load_data(cfg.data)
    img = to_pixels(data.test.x[0], data.meta)
    views = augmented_views(img, 30, seed=2)                           # the run's seed draws the views
    aug = np.load(d / AUGMENTATION)
    assert np.array_equal(aug["views"], (views * 255).round().to(torch.uint8).numpy())
    assert list(aug["layers"]) == ["body.fc1", "head"] and int(aug["label"]) == int(data.test.y[0])
    with torch.no_grad():
        x = to_inputs(views, data.meta)
        h1 = model.body.fc1(model.body.flat(x)).numpy()
        h3 = model(x).numpy()
    assert np.allclose(aug["l1_ff"], np.corrcoef(h1.T), atol=1e-4)     # l1 = fc1, l3 = head (3 Linear layers)
    assert np.allclose(aug["l3_bb"], np.corrcoef(h3), atol=1e-4)
    # invariance.csv: digit 0's augmentation variance at the head, recomputed with numpy
    idx = pick_per_class(data.test.y, 1, 2)
    ref_idx = pick_per_class(data.test.y, 2, 3)[:20]
    with torch.no_grad():
        v0 = model(to_inputs(augmented_views(to_pixels(data.test.x[idx[0]], data.meta), 20, 2), data.meta)).numpy()
        r = model(data.test.x[ref_idx]).numpy()
    inv = pd.read_csv(d / INVARIANCE)
    row = inv[(inv["digit"] == 0) & (inv["layer"] == "head")].iloc[0]
    assert row["aug_variance"] == pytest.approx(v0.var(0, ddof=1).sum() / r.var(0, ddof=1).sum(), rel=1e-4)
    assert row["score"] == pytest.approx(np.corrcoef(v0)[~np.eye(20, dtype=bool)].mean(), abs=1e-5)
    ref = pd.read_csv(d / INVARIANCE_REFERENCE).set_index("layer")["score"]
    assert ref["head"] == pytest.approx(np.corrcoef(r)[~np.eye(20, dtype=bool)].mean(), abs=1e-5)
    nums = seed_numbers(d, nxt="body.fc2")
    assert nums["aug_variance_last"] == pytest.approx(inv[inv["layer"] == "head"]["aug_variance"].mean())
    evo = corr_means_frame(read_corr_means(d / CORR_MEANS))
    end = evo[evo["epoch"] == 2].set_index(["layer_i", "layer_j"])["mean_abs_corr"]
    assert nums["corr_first_last_end"] == pytest.approx(end[("body.fc1", "head")])
    assert nums["corr_pairs_end"] == pytest.approx(end.mean())


def test_write_images_one_png_per_view(tmp_path):
    from PIL import Image
    imgs = torch.rand(5, 1, 28, 28)
    paths = write_images(imgs, tmp_path / "augs", scale=2)
    assert [p.name for p in paths] == [f"{k}.png" for k in range(1, 6)]
    with Image.open(paths[0]) as im:
        assert im.size == (56, 56) and im.mode == "L"


def test_seed_claim_verdicts():
    effect = seed_claim("e", "An effect.", [0.20, 0.25, 0.22], null=0.0)
    mean, half = np.mean([0.20, 0.25, 0.22]), 4.302652729911275 * np.std([0.20, 0.25, 0.22], ddof=1) / np.sqrt(3)
    assert effect["estimate"] == pytest.approx(mean) and effect["ci"] == pytest.approx([mean - half, mean + half])
    assert effect["verdict"] == "resolved" and trend(effect, "up", "down") == "up"
    noise = seed_claim("n", "Noise.", [0.1, -0.1, 0.05], null=0.0)
    assert noise["verdict"] == "unresolved" and trend(noise, "up", "down", "flat") == "flat"
    unconverged = seed_claim("u", "Unconverged.", [0.2, 0.25, 0.22], null=0.0, converged=False)
    assert unconverged["verdict"] == "unresolved" and "converged" in trend(unconverged, "up", "down", "flat")
    ratio = seed_claim("r", "A ratio.", [0.30, 0.28, 0.31], null=1.0)
    assert ratio["verdict"] == "resolved" and trend(ratio, "up", "down", null=1.0) == "down"
    one = seed_claim("one", "One seed.", [0.9], null=0.0)
    assert one["verdict"] == "unresolved" and "no interval" in trend(one, "up", "down", "flat")


def test_per_layer_seeds_draws_every_seed_and_the_mean():
    df = pd.DataFrame({"seed": [0, 0, 1, 1], "layer": ["a", "b"] * 2, "v": [1.0, 2.0, 3.0, 6.0]})
    fig = plot_per_layer_seeds(df, "v", "value")
    lines = fig.axes[0].get_lines()
    assert np.allclose(lines[-1].get_ydata(), [2.0, 4.0]) and len(lines) == 3
    plt.close(fig)


def test_experiment_writes_the_seed_file_names_and_claims(tmp_path):
    import papermill as pm
    out = tmp_path / "out"
    pm.execute_notebook(str(NOTEBOOK), str(tmp_path / "fs.ipynb"), cwd=str(tmp_path), progress_bar=False,
                        kernel_name="python3", parameters={"profile": "smoke", "out_dir": str(out), "n_augmentations": 12})
    figs = out / "figures"
    for name in ("l1_ff", "l4_ff", "l1_bb", "l4_bb"):
        assert (figs / "intra" / f"{name}.png").stat().st_size > 5000
    assert sorted(p.name for p in (figs / "augs").glob("*.png")) == sorted(f"{k}.png" for k in range(1, 13))
    assert (figs / "intra_layer_correlation.png").exists() and (figs / "layer_feature_correlation.png").exists()
    h = read_headline(out / "headline.json")
    assert h["context"]["seeds"] == [0, 1] and (out / h["context"]["key_figure"]).exists()
    ids = {c["id"] for c in h["claims"]}
    assert {"val_accuracy", "corr_first_last_training", "aug_variance_depth"} <= ids
    assert all(c["n_seeds"] == 2 for c in h["claims"])
    runs = sorted((out / "sweep" / "feature_signal").iterdir())
    assert len(runs) == 2 and all((r / "tb").is_dir() for r in runs)


def test_corr_means_is_a_view_of_metrics_jsonl(trained):
    from ablation_harness.metrics.representation import write_corr_means
    _, res, _ = trained
    path = res.run_dir.file(CORR_MEANS)
    before = path.read_text()
    path.unlink()
    write_corr_means(res.run_dir.path)                 # rebuilt from metrics.jsonl alone
    assert path.read_text() == before


def test_console_line_goes_to_the_run_dir_not_stdout(tmp_path, capsys):
    cfg = _cfg(epochs=2).model_copy(update={"callbacks": []})
    cfg = RunConfig.model_validate({**cfg.model_dump(), "callbacks": [
        {"name": "classification"}, {"name": "console_metrics", "file": "console.log"}]})
    res = run(cfg, root=tmp_path)
    lines = res.run_dir.file("console.log").read_text().splitlines()
    assert capsys.readouterr().out == ""
    hist = res.trainer.history
    assert len(lines) == 2 and lines[1].startswith("epoch   2") and f"val loss {hist[1]['val/loss']:.4f}" in lines[1]
    assert "macro-F1" in lines[0]
