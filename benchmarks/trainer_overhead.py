"""Trainer overhead: wall time of Trainer.fit (jsonl sink + per-epoch checkpoint) / a plain PyTorch loop.

Same model, data, batches and steps; interleaved repeats in one process; the median ratio is printed.
Target: <= 1.05. Run: .venv/bin/python benchmarks/trainer_overhead.py
"""
import statistics
import tempfile
import time

import torch

from ablation_harness.config import RunConfig
from ablation_harness.core import RunDir, seed_everything
from ablation_harness.data import iterate_batches, load_data
from ablation_harness.models import build_model
from ablation_harness.sinks import make_sinks
from ablation_harness.train import Checkpoint, Trainer

CFG = RunConfig.model_validate({"device": "cpu", "data": {"name": "mnist", "n_train": 4096, "n_val": 512},
                                "model": {"name": "tinycnn"}, "train": {"epochs": 2, "batch_size": 128, "progress": False}})


def plain(data):
    """A minimal hand-written loop: forward, loss, backward, step; validation each epoch."""
    seed_everything(CFG.seed)
    model = build_model(CFG.model, data.input_shape, data.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=CFG.optim.lr)
    gen = torch.Generator().manual_seed(CFG.seed)
    t = time.perf_counter()
    for _ in range(CFG.train.epochs):
        model.train()
        for xb, yb in iterate_batches(data.train, CFG.train.batch_size, generator=gen):
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
        model.eval()
        with torch.no_grad():
            for xb, yb in iterate_batches(data.val, 1024, shuffle=False):
                torch.nn.functional.cross_entropy(model(xb), yb)
    return time.perf_counter() - t


def harness(data, root):
    """The Trainer with the jsonl sink and a checkpoint every epoch (best and last too)."""
    seed_everything(CFG.seed)
    model = build_model(CFG.model, data.input_shape, data.num_classes)
    rd = RunDir.create(root, "bench", f"r{time.perf_counter_ns()}")
    sinks = make_sinks(CFG.sinks, rd.path)
    tr = Trainer(model, data.train, data.val, CFG, callbacks=[Checkpoint(every=1)], sinks=sinks, run_dir=rd)
    t = time.perf_counter()
    tr.fit()
    sinks.close()
    return time.perf_counter() - t


def main(repeats: int = 5):
    data = load_data(CFG.data)
    ratios = []
    with tempfile.TemporaryDirectory() as root:
        plain(data), harness(data, root)  # warm-up
        for _ in range(repeats):
            p, h = plain(data), harness(data, root)
            ratios.append(h / p)
            print(f"plain {p:.3f} s  trainer {h:.3f} s  ratio {h / p:.3f}")
    print(f"median trainer/plain ratio over {repeats} interleaved repeats: {statistics.median(ratios):.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
