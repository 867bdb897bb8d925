"""Metrics benchmarks: the library against plain baselines. Prints a table; asserts nothing.

    .venv/bin/python benchmarks/metrics.py [--quick]

1. All-pairs linear CKA, 5 layers, n = 10,000, d = 512 (float32 activations): `cka_matrix` against a
   naive n x n Gram-matrix implementation (per pair: both Gram matrices, centred with H, <HKH, HLH>),
   and against the same Gram formula with each layer's centred Gram matrix cached once.
2. All-pairs cross-correlation (every layer pair i <= j) of a 4-layer MLP's outputs on 10,000 samples:
   `layer_cross_correlations` against `numpy.corrcoef` per pair.
3. Gradient-dynamics overhead per optimizer step of the default MLP (784-128x4-10, batch 128, Adam): a
   plain torch loop with `GradientDynamics.update()` every step, and the Trainer (default logging, no
   sinks) with the `grad_dynamics` callback every step and at its default schedule, each against the same
   loop without it.

Each time is the minimum over repeats of both the wall-clock time and the process CPU time. On a shared,
busy machine wall times mean little; run with `--threads 1` there: the CPU time of one thread is then
close to the wall time the same work takes on an idle core (a lower bound on it with more threads).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from ablation_harness.config import RunConfig
from ablation_harness.data import ArrayDataset
from ablation_harness.metrics.callbacks import GradDynamicsCallback
from ablation_harness.metrics.gradients import GradientDynamics
from ablation_harness.metrics.representation import cka_matrix, layer_cross_correlations
from ablation_harness.models import MLP
from ablation_harness.train import Trainer


def timed(fn) -> np.ndarray:
    """(wall, cpu) seconds of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return np.array([time.perf_counter() - w, time.process_time() - c])


def best_of(fn, repeats: int) -> np.ndarray:
    """Minimum (wall, cpu) seconds over `repeats` calls."""
    return np.min([timed(fn) for _ in range(repeats)], axis=0)


def naive_cka_pairs(layers: list[torch.Tensor], cache: bool) -> np.ndarray:
    """Biased linear CKA of every pair from n x n Gram matrices (H K H), optionally caching each layer's."""
    n = layers[0].shape[0]

    def centred_gram(x):
        k = x @ x.T
        return k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()

    grams = [centred_gram(x) for x in layers] if cache else None
    L = len(layers)
    out = np.eye(L)
    for i in range(L):
        for j in range(i + 1, L):
            ki = grams[i] if cache else centred_gram(layers[i])
            kj = grams[j] if cache else centred_gram(layers[j])
            hij, hii, hjj = (ki * kj).sum(), (ki * ki).sum(), (kj * kj).sum()
            out[i, j] = out[j, i] = (hij / (hii * hjj).sqrt()).item()
    return out


def bench_cka(n: int, d: int, L: int, repeats: int) -> list[tuple]:
    """Rows for the all-pairs CKA benchmark."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(n, d, generator=g)
    layers = [torch.relu(base @ torch.randn(d, d, generator=g) / d ** 0.5 + 0.3 * torch.randn(n, d, generator=g))
              for _ in range(L)]
    lib = best_of(lambda: cka_matrix(layers), repeats)
    lib_u = best_of(lambda: cka_matrix(layers, unbiased=True), repeats)
    out = {}
    naive = timed(lambda: out.setdefault("ref", naive_cka_pairs(layers, cache=False)))
    ref = out["ref"]
    cached = best_of(lambda: naive_cka_pairs(layers, cache=True), 1)
    err = np.abs(cka_matrix(layers).numpy() - ref).max()
    label = f"all-pairs CKA, {L} layers, n={n}, d={d}"
    return [(label + " (biased)", lib, naive, f"<= 1 s, >= 10x; max |diff| vs naive {err:.1e}"),
            (label + " (unbiased)", lib_u, naive, "same products + O(n) terms"),
            (label + " vs Gram cached per layer", lib, cached, "a stronger baseline")]


def bench_crosscorr(n: int, repeats: int) -> list[tuple]:
    """Rows for the all-pairs cross-correlation benchmark on a 4-layer MLP's outputs."""
    torch.manual_seed(0)
    model = MLP(784, width=512, depth=3).eval()
    names = ["body.fc1", "body.fc2", "body.fc3", "head"]
    x = torch.randn(n, 784)
    with torch.no_grad():
        h1 = model.body.fc1(x.flatten(1))
        h2 = model.body.fc2(torch.relu(h1))
        h3 = model.body.fc3(torch.relu(h2))
        out = model.head(torch.relu(h3))
    acts = dict(zip(names, [h1, h2, h3, out]))
    lib = best_of(lambda: layer_cross_correlations(acts), repeats)
    arrays = [a.double().numpy() for a in acts.values()]

    def numpy_pairs():
        for i, a in enumerate(arrays):
            for b in arrays[i:]:
                np.corrcoef(a.T, b.T)[:a.shape[1], a.shape[1]:]

    base = best_of(numpy_pairs, 1)
    widths = "/".join(str(a.shape[1]) for a in arrays)
    return [(f"all-pairs cross-corr, 4-layer MLP ({widths}), n={n}", lib, base, "<= 0.5 s; baseline numpy.corrcoef per pair")]


def mlp_setup(batch: int):
    """An MLP, its optimizer and one batch of MNIST-sized inputs."""
    torch.manual_seed(0)
    model = MLP(784, width=128, depth=4)
    return model, torch.optim.Adam(model.parameters(), 1e-3), torch.randn(batch, 784), torch.randint(0, 10, (batch,))


def bench_grad_loop(steps: int, repeats: int, batch: int = 128) -> tuple:
    """Plain torch loop: a training step with and without GradientDynamics.update() every step."""
    model, opt, x, y = mlp_setup(batch)
    tracker = GradientDynamics(model)

    def loop(track: bool):
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            if track:
                tracker.update()
            opt.step()

    loop(True), loop(False)  # warm-up
    plain, tracked = [], []
    for _ in range(repeats):  # interleaved, so both see the same machine load
        plain.append(timed(lambda: loop(False)))
        tracked.append(timed(lambda: loop(True)))
    n = sum(p.numel() for p in model.parameters())
    return (f"grad dynamics every step, plain loop ({n} params, batch {batch}), per step",
            np.min(tracked, axis=0) / steps, np.min(plain, axis=0) / steps, "<= 1.5x")


def bench_grad_trainer(steps: int, repeats: int, batch: int = 128) -> list[tuple]:
    """The Trainer with the grad_dynamics callback (every step / default schedule) against none."""
    g = torch.Generator().manual_seed(0)
    train = ArrayDataset(torch.randn(steps * batch, 784, generator=g), torch.randint(0, 10, (steps * batch,), generator=g))
    val = ArrayDataset(train.x[:256], train.y[:256])
    cfg = RunConfig(device="cpu", model={"name": "mlp"}, optim={"name": "adam"},
                    train={"epochs": 1, "batch_size": batch, "progress": False})

    def fit(callbacks):
        torch.manual_seed(0)
        trainer = Trainer(MLP(784, width=128, depth=4), train, val, cfg, callbacks=callbacks)
        trainer.fire("fit_start")
        return timed(lambda: trainer.train_epoch(torch.Generator().manual_seed(0)))

    results = {"none": [], "every": [], "default": []}
    for _ in range(repeats):
        results["none"].append(fit([]))
        for key, kw in (("every", {"every": 1}), ("default", {})):
            results[key].append(fit([GradDynamicsCallback(sign_bins=0, **kw)]))
    best = {k: np.min(v, axis=0) / steps for k, v in results.items()}
    return [("grad_dynamics callback every step, Trainer, per step", best["every"], best["none"], "<= 1.5x"),
            ("grad_dynamics callback default (every 50), Trainer, per step", best["default"], best["none"], "<= 1.05x")]


def ratio(lib: float, base: float) -> str:
    """'12.3x faster' style speed-up, or '1.25x' overhead when the library takes longer."""
    return f"{base / lib:.1f}x" if base > lib else f"{lib / base:.2f}x"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = 2000 if args.quick else 10_000
    rows = bench_cka(n, 512, 5, repeats=3)
    rows += bench_crosscorr(n, repeats=5)
    rows.append(bench_grad_loop(steps=50, repeats=7))
    rows += bench_grad_trainer(steps=100, repeats=5)
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average {load}\n")
    head = (f"{'benchmark':<64} {'lib wall':>9} {'base wall':>10} {'ratio':>7} {'lib cpu':>9} {'base cpu':>10} {'ratio':>7}"
            "  target / note")
    print(head)
    print("-" * len(head))
    for label, lib, base, note in rows:
        print(f"{label:<64} {lib[0] * 1e3:>7.1f}ms {base[0] * 1e3:>8.1f}ms {ratio(lib[0], base[0]):>7} "
              f"{lib[1] * 1e3:>7.1f}ms {base[1] * 1e3:>8.1f}ms {ratio(lib[1], base[1]):>7}  {note}")
    print("\nratio: baseline/library when the library is faster, library/baseline (an overhead) otherwise")


if __name__ == "__main__":
    main()
