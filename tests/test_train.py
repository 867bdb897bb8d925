"""train: determinism, events, schedule formula, checkpoints, divergence, interruption."""
import json
import math
import pickle

import pytest
import torch

from ablation_harness.config import SchedulerConfig
from ablation_harness.core import read_jsonl
from ablation_harness.train import (Callback, CheckpointError, Schedule, Trainer, load_checkpoint, lr_factor,
                                    make_optimizer, make_scheduler, register_callback, run)


def test_same_config_and_seed_give_identical_metrics(tmp_path, tiny_cfg):
    a = run(tiny_cfg, root=tmp_path / "a")
    b = run(tiny_cfg, root=tmp_path / "b")
    rows = lambda r: [(x["metric"], x["step"], x["value"]) for x in read_jsonl(r.run_dir.file("metrics.jsonl"))]
    assert rows(a) == rows(b) and len(rows(a)) > 20
    tiny_cfg.seed = 4
    c = run(tiny_cfg, root=tmp_path / "c")
    assert rows(c) != rows(a)


def test_run_dir_contents_and_checkpoints_load_weights_only(tmp_path, tiny_cfg):
    tiny_cfg.checkpoint.every = 1
    res = run(tiny_cfg, root=tmp_path)
    p = res.run_dir.path
    assert {"config.yaml", "env.json", "metrics.jsonl", "summary.json", "ckpt", "figures"} <= {f.name for f in p.iterdir()}
    assert sorted(f.name for f in (p / "ckpt").iterdir()) == ["best.pt", "epoch001.pt", "epoch002.pt", "last.pt"]
    state = load_checkpoint(p / "ckpt" / "last.pt")
    model = res.trainer.model
    assert all(torch.equal(state["model"][k], v) for k, v in model.state_dict().items())
    env = json.loads((p / "env.json").read_text())
    assert env["seed"] == tiny_cfg.seed and env["libraries"]["torch"]
    summary = json.loads((p / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["steps"] == 2 * math.ceil(400 / 64)


def test_foreign_or_corrupt_checkpoint_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"model": Evil()}))
    with pytest.raises(CheckpointError, match="refusing"):
        load_checkpoint(bad)
    (tmp_path / "torn.pt").write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "torn.pt")


def test_divergence_stops_cleanly(tmp_path, tiny_cfg):
    tiny_cfg.optim.lr = 1e12
    tiny_cfg.optim.name = "sgd"
    tiny_cfg.train.epochs = 5
    res = run(tiny_cfg, root=tmp_path)
    assert res.status == "diverged"
    assert json.loads(res.run_dir.file("summary.json").read_text())["status"] == "diverged"
    assert res.trainer.step < 5 * math.ceil(400 / 64)


def test_ctrl_c_leaves_readable_run_marked_interrupted(tmp_path, tiny_cfg):
    @register_callback("_interrupt_at_3")
    class Interrupt(Callback):
        def on_after_step(self, trainer):
            if trainer.step == 3:
                raise KeyboardInterrupt
    tiny_cfg.callbacks = [{"name": "_interrupt_at_3"}]
    with pytest.raises(KeyboardInterrupt):
        run(tiny_cfg, root=tmp_path)
    (rd,) = list((tmp_path / "t").iterdir())
    assert json.loads((rd / "summary.json").read_text())["status"] == "interrupted"
    assert [r["step"] for r in read_jsonl(rd / "metrics.jsonl") if r["metric"] == "loss"] == [1, 2]


def test_events_fire_in_order(tmp_path, tiny_cfg):
    seen = []

    class Spy(Callback):
        pass
    for ev in ("fit_start", "epoch_start", "batch_start", "after_backward", "after_step", "validation_end", "epoch_end", "fit_end"):
        setattr(Spy, f"on_{ev}", lambda self, tr, ev=ev: seen.append(ev))
    tiny_cfg.train.epochs = 1
    tiny_cfg.train.max_steps = 2
    run(tiny_cfg, root=tmp_path, extra_callbacks=[Spy()])
    step = ["batch_start", "after_backward", "after_step"]
    assert seen == ["fit_start", "epoch_start", *step, *step, "validation_end", "epoch_end", "fit_end"]


@pytest.mark.parametrize("name,warm,total,floor", [("constant", 10, 50, 0.0), ("cosine", 5, 40, 0.1), ("cosine", 0, 30, 0.0)])
def test_lr_schedule_equals_formula_every_step(name, warm, total, floor):
    cfg = SchedulerConfig(name=name, warmup_steps=warm, min_lr_ratio=floor)
    model = torch.nn.Linear(2, 1)
    opt = make_optimizer(model.parameters(), type("O", (), {"name": "sgd", "lr": 0.5, "momentum": 0.0, "weight_decay": 0.0})())
    sched = make_scheduler(opt, cfg, total)
    for t in range(total):
        if t < warm:
            expect = 0.5 * (t + 1) / warm
        elif name == "constant":
            expect = 0.5
        else:
            expect = 0.5 * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (t - warm) / (total - warm))))
        assert opt.param_groups[0]["lr"] == pytest.approx(expect, rel=1e-12, abs=1e-15)
        opt.step()
        sched.step()


def test_schedule_due_steps():
    assert [s for s in range(1, 31) if Schedule(every=10).due_step(s)] == [10, 20, 30]
    assert [s for s in range(1, 600) if Schedule(log_spaced=True).due_step(s)] == [1, 2, 5, 10, 20, 50, 100, 200, 500]


class UpdateProbe(Callback):
    """Measures the learning rate each SGD step really used: -(w_after - w_before) / grad on one weight."""
    def __init__(self):
        self.used = {}

    def on_after_backward(self, trainer):
        p = next(trainer.model.parameters())
        self.before, self.grad = p.detach().clone(), p.grad.detach().clone()

    def on_after_step(self, trainer):
        p = next(trainer.model.parameters())
        i = self.grad.abs().argmax()
        self.used[trainer.step] = float(-(p.detach().flatten()[i] - self.before.flatten()[i]) / self.grad.flatten()[i])


def test_logged_lr_is_the_rate_that_step_used(tmp_path, tiny_cfg):
    """With a warm-up the rate changes every step; the logged one must be the one the update was made with."""
    tiny_cfg.optim.name, tiny_cfg.optim.lr, tiny_cfg.optim.momentum = "sgd", 0.1, 0.0
    tiny_cfg.scheduler.warmup_steps, tiny_cfg.train.max_steps = 4, 6
    probe = UpdateProbe()
    res = run(tiny_cfg, root=tmp_path, extra_callbacks=[probe])
    logged = {r["step"]: r["value"] for r in read_jsonl(res.run_dir.file("metrics.jsonl")) if r["metric"] == "lr"}
    assert sorted(logged) == [1, 2, 3, 4, 5, 6]
    for step, lr in logged.items():
        assert lr == pytest.approx(probe.used[step], rel=1e-3)
    assert [logged[s] for s in range(1, 7)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])


def stub_trainer(history, monitor, mode):
    """What `summarize` reads of a trainer."""
    from types import SimpleNamespace
    from ablation_harness.config import RunConfig
    cfg = RunConfig.model_validate({"checkpoint": {"monitor": monitor, "mode": mode}})
    return SimpleNamespace(history=history, status="complete", step=10, model=torch.nn.Linear(2, 2), cfg=cfg)


@pytest.mark.parametrize("monitor,mode,best_epoch", [("val/loss", "min", 2), ("val/acc", "max", 1), ("val/top1", "max", 2),
                                                     ("val/acc", "min", 2)])
def test_best_in_summary_follows_the_checkpoint_monitor_and_mode(monitor, mode, best_epoch):
    from ablation_harness.train import summarize
    history = [{"epoch": 1, "step": 5, "train/loss": 1.0, "val/loss": 0.50, "val/acc": 0.90, "val/top1": 0.3},
               {"epoch": 2, "step": 10, "train/loss": 0.8, "val/loss": 0.40, "val/acc": 0.80, "val/top1": 0.7}]
    s = summarize(stub_trainer(history, monitor, mode), 1.0)
    row = history[best_epoch - 1]
    assert {k: s[f"best/{k}"] for k in ("val/loss", "val/acc", "val/top1")} == {k: row[k] for k in ("val/loss", "val/acc", "val/top1")}
    assert s["best/epoch"] == best_epoch


def test_best_in_summary_is_the_epoch_best_pt_holds(tmp_path, tiny_cfg):
    tiny_cfg.checkpoint.monitor, tiny_cfg.checkpoint.mode, tiny_cfg.train.epochs = "val/loss", "min", 3
    res = run(tiny_cfg, root=tmp_path)
    best = load_checkpoint(res.run_dir.path / "ckpt" / "best.pt")
    rows = res.trainer.history
    i = min(range(len(rows)), key=lambda j: rows[j]["val/loss"])
    assert best["epoch"] == i                                     # best.pt holds the epoch of lowest val loss
    assert (res.summary["best/val/loss"], res.summary["best/val/acc"]) == (rows[i]["val/loss"], rows[i]["val/acc"])
    assert res.summary["best/epoch"] == i + 1


def test_per_epoch_false_is_honoured(tmp_path, tiny_cfg):
    """`per_epoch: false` alone switches the spectral callback's per-epoch measurements off."""
    tiny_cfg.callbacks = [{"name": "spectral", "per_epoch": False}]
    res = run(tiny_cfg, root=tmp_path)
    files = sorted(p.name for p in res.run_dir.path.glob("spectral_*.json"))
    assert files == ["spectral_final.json"]
    assert not [r for r in read_jsonl(res.run_dir.file("metrics.jsonl")) if r["metric"].startswith("spectral/")]
    tiny_cfg.callbacks = [{"name": "spectral"}]                  # the default stays once per epoch
    res = run(tiny_cfg, root=tmp_path / "default")
    assert sorted(p.name for p in res.run_dir.path.glob("spectral_*.json")) == [
        "spectral_epoch001.json", "spectral_epoch002.json", "spectral_final.json"]
