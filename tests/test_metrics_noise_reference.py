"""metrics.noise against numpy and hand-written gradients: the standardised noise, the Hill tails of a gradient
sample, minibatch gradients, the noise probe and its per-seed summary."""
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from ablation_harness.data import ArrayDataset
from ablation_harness.metrics.noise import (DEEP_K_RATIO, K_RATIOS, NoiseProbe, minibatch_gradients, noise_scale,
                                            noise_tails, standardized_noise, summarize_noise)
from ablation_harness.tasks import CLASSIFICATION


def numpy_hill(x, k_ratio):
    """Hill estimate of the tail index of |x|: 1 / mean(log(a_i / a_(k+1))) over the k largest |x| (zeros dropped)."""
    a = np.sort(np.abs(np.asarray(x, float)).ravel())[::-1]
    a = a[a > 0]
    k = int(k_ratio * len(a))
    return 1 / np.mean(np.log(a[:k] / a[k]))


def numpy_standardized(G):
    """Noise about the per-entry median; second half of the rows over the MAD of the first half (zero MAD dropped)."""
    noise = G - np.median(G, 0)
    half = len(G) // 2
    scale = np.median(np.abs(noise[:half]), 0)
    keep = scale > 0
    return noise[half:, keep] / scale[keep]


def test_standardized_noise_matches_numpy_median_and_mad():
    rng = np.random.default_rng(0)
    G = rng.standard_t(3, (11, 7))          # odd row counts (11, and 5 in the first half): unique medians
    G[:, 2] = 0.4                            # a constant entry has no scale and is dropped
    got = standardized_noise(torch.from_numpy(G)).numpy()
    assert got.shape == (6, 6)
    np.testing.assert_allclose(got, numpy_standardized(G), rtol=1e-12)


def test_noise_tails_are_the_hill_estimates_of_the_pooled_and_standardised_noise():
    rng = np.random.default_rng(1)
    G = 0.1 + rng.standard_t(3, (35, 600)) * np.linspace(0.5, 2.0, 600)  # odd row counts (35, 17): unique medians
    ratios = (0.05, 0.2, DEEP_K_RATIO * 10)
    rows = noise_tails(torch.from_numpy(G), ratios)
    assert [r["k_ratio"] for r in rows] == list(ratios)
    for r in rows:
        assert r["alpha"] == pytest.approx(numpy_hill(G - G.mean(0), r["k_ratio"]), rel=1e-9)
        assert r["alpha_standardized"] == pytest.approx(numpy_hill(numpy_standardized(G), r["k_ratio"]), rel=1e-9)


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()
    ds = ArrayDataset(torch.randn(40, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (40,), generator=g))
    return model, ds


def hand_gradients(model, ds, batch_size, n_draws, seed):
    """Minibatches drawn with replacement by torch.randint, each gradient by backward() on a cross-entropy loss."""
    gen, out = torch.Generator().manual_seed(seed), []
    for _ in range(n_draws):
        idx = torch.randint(len(ds), (batch_size,), generator=gen)
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(ds.x[idx]), ds.y[idx]).backward()
        out.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone())
    model.zero_grad(set_to_none=True)
    return torch.stack(out)


def test_minibatch_gradients_equal_backward_on_each_drawn_minibatch():
    model, ds = _problem()
    G = minibatch_gradients(model, CLASSIFICATION, ds, 8, 6, torch.Generator().manual_seed(3))
    assert all(p.grad is None for p in model.parameters())                 # .grad untouched
    ref = hand_gradients(model, ds, 8, 6, 3)
    assert G.shape == (6, sum(p.numel() for p in model.parameters()))
    torch.testing.assert_close(G, ref, rtol=1e-12, atol=1e-14)


def test_noise_probe_rows_at_its_steps():
    model, ds = _problem(1)
    logged = []
    trainer = SimpleNamespace(step=0, model=model, task=CLASSIFICATION, train_data=ds, callbacks=[], log_many=logged.extend)
    probe = NoiseProbe(steps=(0, 3), batch_size=8, n_draws=10, k_ratios=(0.1, 0.2), seed=5)
    probe.on_fit_start(trainer)
    for step in (1, 2, 3):
        trainer.step = step
        probe.on_after_step(trainer)
    assert [r["step"] for r in probe.rows] == [0, 0, 3, 3] and len(probe.z) == 2    # steps 0 and 3 only
    G = hand_gradients(model, ds, 8, 10, 5 + 3)                                     # the draws of step 3
    ns = noise_scale(G, 8)
    for r in probe.rows[2:]:
        assert r["b_simple"] == pytest.approx(ns["b_simple"], rel=1e-9) and r["n_values"] == G.numel()
        assert r["alpha"] == pytest.approx(numpy_hill((G - G.mean(0)).numpy(), r["k_ratio"]), rel=1e-9)
    assert {(r["metric"], r.get("layer")) for r in logged} >= {("alpha", "k0.1"), ("alpha_standardized", "k0.2"),
                                                               ("b_simple", None), ("tr_sigma", None)}


def test_summarize_noise_by_hand():
    rows = [{"step": s, "k_ratio": r, "alpha": a, "alpha_standardized": a + 1, "b_simple": b}
            for s, b, alphas in ((0, 40.0, (2.0, 2.5, 3.0, 9.0)), (50, 10.0, (2.2, 2.6, 3.2, 8.0)))
            for r, a in zip(K_RATIOS + (DEEP_K_RATIO,), alphas)]
    seed_k = np.array([2.0, 2.5, 3.0, 2.2, 2.6, 3.2])                 # the deep-tail rows are not the seed's estimate
    s = summarize_noise(rows)
    assert s["alpha"] == pytest.approx(seed_k.mean()) and s["alpha_std"] == pytest.approx(seed_k.std())
    assert (s["alpha_min"], s["alpha_max"]) == (2.0, 3.2) and s["alpha_standardized"] == pytest.approx(seed_k.mean() + 1)
    assert s["predicted_beta"] == pytest.approx(1 - 1 / seed_k.mean())
    assert (s["b_simple"], s["b_simple_min"], s["b_simple_max"], s["b_simple_step"]) == (10.0, 10.0, 40.0, 50)
    assert math.isnan(s["alpha_deep"]) and s["k_deep"] == 0
    z = [torch.from_numpy(np.random.default_rng(k).standard_t(3, 20_000)) for k in range(2)]
    deep = summarize_noise(rows, z)
    assert deep["k_deep"] == int(DEEP_K_RATIO * 40_000)
    assert deep["alpha_deep"] == pytest.approx(numpy_hill(np.concatenate([v.numpy() for v in z]), DEEP_K_RATIO), rel=1e-9)
    assert deep["alpha_deep_ci"][0] < deep["alpha_deep"] < deep["alpha_deep_ci"][1]
