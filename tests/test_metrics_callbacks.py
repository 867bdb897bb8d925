"""Metric callbacks inside real (tiny) training runs, checked against independent computations."""
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, f1_score

from ablation_harness.config import ConfigError, RunConfig
from ablation_harness.core import read_jsonl
from ablation_harness.metrics.callbacks import (ClassificationCallback, GradDynamicsCallback, RepresentationCallback,
                                                SpectralCallback)
from ablation_harness.train import Callback, build_callbacks, run


class RecordWeights(Callback):
    """Flattened weights at each after_backward (the point the gradients are computed at)."""
    def __init__(self):
        self.w = {}

    def on_after_backward(self, trainer):
        self.w[trainer.step + 1] = torch.cat([p.detach().reshape(-1).clone() for p in trainer.model.parameters()]).double()


def tiny_run(tmp_path, callbacks, epochs=2, extra=()):
    cfg = RunConfig(name="t", out_dir=str(tmp_path), device="cpu", seed=0,
                    data={"name": "digits", "n_train": 256, "n_val": 128},
                    model={"name": "mlp", "width": 16, "depth": 2}, optim={"lr": 1e-2},
                    train={"epochs": epochs, "batch_size": 64, "progress": False, "analysis_batch_size": 100},
                    callbacks=callbacks)
    res = run(cfg, extra_callbacks=extra)
    return res, [r for r in read_jsonl(res.run_dir.path / "metrics.jsonl")]


def test_registry_builds_callbacks_by_name_and_rejects_bad_kwargs():
    cbs = build_callbacks([{"name": "spectral", "every_epochs": 2}, {"name": "grad_dynamics", "every": 5},
                           {"name": "representation", "log_spaced": True}, {"name": "classification"}])
    assert [type(c) for c in cbs] == [SpectralCallback, GradDynamicsCallback, RepresentationCallback, ClassificationCallback]
    assert cbs[1].schedule.every == 5 and cbs[2].schedule.log_spaced and cbs[0].schedule.per_epoch
    assert GradDynamicsCallback().schedule.every == 50
    with pytest.raises(ConfigError):
        build_callbacks([{"name": "grad_dynamics", "evry": 5}])


def test_grad_dynamics_update_norm_matches_recorded_weights(tmp_path):
    rec = RecordWeights()
    _, rows = tiny_run(tmp_path, [{"name": "grad_dynamics", "every": 3}], epochs=2, extra=[rec])
    logged = {r["step"]: r["value"] for r in rows if r["metric"] == "grad/update_norm" and r["layer"] is None}
    assert sorted(logged) == [3, 6]   # 8 steps, every 3; step 3 compares with a snapshot of step 2
    for s, v in logged.items():
        assert v == pytest.approx(torch.linalg.norm(rec.w[s] - rec.w[s - 1]).item(), rel=1e-5)
    layers = {r["layer"] for r in rows if r["metric"] == "grad/zero_count"}
    assert layers == {None, "body.fc1", "body.fc2", "head"}
    signs = json.loads((tmp_path / "default" / "t" / "grad_signs.json").read_text())
    assert signs["steps"] == [3, 6] and np.array(signs["fractions"]).shape == (2, 3, 32, 3)


def test_spectral_files_match_numpy_svd_and_classification_agrees_with_trainer(tmp_path):
    res, rows = tiny_run(tmp_path, [{"name": "spectral", "topk": 2}, {"name": "classification"}])
    d = res.run_dir.path
    assert (d / "spectral_epoch001.json").exists() and (d / "spectral_epoch002.json").exists()
    final = json.loads((d / "spectral_final.json").read_text())
    W = res.trainer.model.head.weight.detach().double().numpy()
    np.testing.assert_allclose(final["layers"]["head"]["singular_values"], np.linalg.svd(W, compute_uv=False), rtol=1e-6)
    top = json.loads((d / "spectral_epoch002.json").read_text())["layers"]["head"]["singular_values"]
    np.testing.assert_allclose(top, np.linalg.svd(W, compute_uv=False)[:2], rtol=1e-6)
    assert any(r["metric"] == "spectral/stable_rank" and r["layer"] == "body.fc1" for r in rows)
    for epoch in (0, 1):   # the trainer's own validation accuracy is an independent computation
        acc = [r["value"] for r in rows if r["epoch"] == epoch and r["split"] == "val" and r["metric"] == "acc"]
        ours = [r["value"] for r in rows if r["epoch"] == epoch and r["metric"] == "accuracy"]
        assert ours == pytest.approx(acc)
    final = json.loads((d / "classification_final.json").read_text())
    assert np.array(final["confusion"]).sum() == 128


class CountEvalForwards(Callback):
    """Counts the model's forward passes in eval mode (validation, or any callback predicting)."""
    def on_fit_start(self, trainer):
        self.n = 0
        trainer.model.register_forward_hook(lambda m, i, o: setattr(self, "n", self.n + (not m.training)))


def test_classification_reads_the_validation_pass_and_matches_a_fresh_prediction(tmp_path):
    counter = CountEvalForwards()
    res, rows = tiny_run(tmp_path, [{"name": "classification"}], epochs=2, extra=[counter])
    assert counter.n == 2   # one validation batch per epoch, and no second pass by the callback
    val = res.trainer.val_data
    with torch.no_grad():
        pred = res.trainer.model.eval()(val.x).argmax(-1).numpy()
    final = json.loads((res.run_dir.path / "classification_final.json").read_text())
    np.testing.assert_array_equal(final["confusion"], confusion_matrix(val.y.numpy(), pred, labels=range(10)))
    f1 = [r["value"] for r in rows if r["metric"] == "macro_f1" and r["epoch"] == 1]
    assert f1 == [pytest.approx(f1_score(val.y.numpy(), pred, average="macro"))]


def test_representation_rows_match_numpy_on_the_analysis_batch(tmp_path):
    res, rows = tiny_run(tmp_path, [{"name": "representation", "probes": True, "information": True}], epochs=1)
    steps = sorted({r["step"] for r in rows if r["metric"] == "cka"})
    assert steps == [0, 4]                                     # before training and after the epoch
    model = res.trainer.model.eval()
    x = res.trainer.analysis_batch[0]
    with torch.no_grad():
        out = model(x).double().numpy()
    c = np.abs(np.corrcoef(out.T))
    ref = c[~np.eye(len(c), dtype=bool)].mean()
    got = [r["value"] for r in rows if r["metric"] == "corr_mean" and r["layer"] == "head|head" and r["step"] == 4]
    assert got == [pytest.approx(ref, abs=1e-6)]
    metrics = {r["metric"] for r in rows}
    assert {"cka", "svd/top1_ratio", "svd/participation_ratio", "probe/accuracy", "ridge_r2", "mi_pc1",
            "gaussian_entropy"} <= metrics
    assert all(r["split"] == "val" for r in rows if r["metric"] == "cka")
