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
