"""Gradient-dynamics counters against hand-computed toy sequences and a plain numpy loop."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from ablation_harness.metrics.gradients import FIRST_STEP_METRICS, METRICS, GradientDynamics


class Toy(nn.Module):
    """Layer `a` = a.weight (4 entries) + a.bias (1); layer `b` = b.weight (2)."""
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 1)
        self.b = nn.Linear(2, 1, bias=False)


def set_state(model, wa, ga, wb, gb):
    """Write weights and gradients by hand: a = weight(4) + bias(1), b = weight(2)."""
    f = lambda v: torch.tensor(v, dtype=torch.float32)
    with torch.no_grad():
        model.a.weight.copy_(f([wa[:4]]))
        model.a.bias.copy_(f(wa[4:]))
        model.b.weight.copy_(f([wb]))
    model.a.weight.grad = f([ga[:4]])
    model.a.bias.grad = f(ga[4:])
    model.b.weight.grad = f([gb])


STEPS = [  # (w_a, g_a, w_b, g_b)
    ([1, 1, 1, 1, 0], [0, 1e-6, -1e-6, 1, 0], [2, 2], [5e-6, -3]),
    ([1, 1.5, 0.5, 0.9, 0], [0, -2e-6, 3e-6, 1e-6, 0.5], [1.9, 1], [-4e-6, 2]),
    ([1, 1.5, 0.5, 0.9, 0], [1, 1, 1, 1, 1], [1.9, 1], [1, 1]),
    ([1, 1.5, 0.5, 0.9, 0], [0, 0, 0, 0, 0], [1.9, 1], [0, 0]),
]


def run_toy():
    model = Toy()
    tr = GradientDynamics(model)
    out = []
    for wa, ga, wb, gb in STEPS:
        set_state(model, wa, ga, wb, gb)
        out.append(tr.update())
    return tr, out


def test_first_step_reports_only_counts_and_norms():
    _, out = run_toy()
    a, b = out[0]["a"], out[0]["b"]
    assert set(a) == set(FIRST_STEP_METRICS)
    assert (a["zero_count"], a["small_count"]) == (2, 4)        # |g| < 1e-7: 0, 0; |g| <= 1e-5: 0, 1e-6, -1e-6, 0
    assert (b["zero_count"], b["small_count"]) == (0, 1)
    assert a["grad_norm"] == pytest.approx(math.sqrt(1 + 2e-12))
    assert b["weight_norm"] == pytest.approx(math.sqrt(8))


def test_second_step_by_hand():
    _, out = run_toy()
    a, b, m = out[1]["a"], out[1]["b"], out[1][None]
    assert set(a) == set(METRICS)
    # layer a: small before {0,1,2,4}, small now {0,1,2,3}
    assert (a["zero_count"], a["small_count"], a["retained"], a["released"]) == (1, 4, 3, 1)
    assert a["frac_released"] == pytest.approx(1 / 4)
    # flips among retained: entry 1 (1e-6 -> -2e-6) and entry 2 (-1e-6 -> 3e-6); entry 0 stays at 0
    assert a["flips"] == 2 and a["frac_flipped"] == pytest.approx(2 / 3)
    # dw = (0, .5, -.5, -.1, 0), dg = (0, -3e-6, 4e-6, ..): dw*dg < 0 for both flips -> two maxima
    assert (a["local_min"], a["local_max"]) == (0, 2)
    assert a["w_diff"] == pytest.approx((0 + 0.5 + 0.5) / 3)
    assert a["update_norm"] == pytest.approx(math.sqrt(0.51))
    # layer b: entry 0 small before and now, flips 5e-6 -> -4e-6 with dw = -.1, dg = -9e-6: a minimum
    assert (b["retained"], b["released"], b["flips"], b["local_min"], b["local_max"]) == (1, 0, 1, 1, 0)
    assert b["frac_flipped"] == 1.0 and b["w_diff"] == pytest.approx(0.1)
    assert b["update_norm"] == pytest.approx(math.sqrt(1.01))
    # whole model: counts summed before the ratios
    assert (m["retained"], m["released"], m["flips"], m["local_min"], m["local_max"]) == (4, 1, 3, 1, 2)
    assert m["frac_released"] == pytest.approx(1 / 5) and m["frac_flipped"] == pytest.approx(3 / 4)
    assert m["w_diff"] == pytest.approx(1.1 / 4) and m["update_norm"] == pytest.approx(math.sqrt(1.52))


def test_empty_denominators_give_zero():
    _, out = run_toy()
    a3, a4 = out[2]["a"], out[3]["a"]
    assert (a3["released"], a3["frac_released"], a3["retained"], a3["frac_flipped"], a3["w_diff"]) == (4, 1.0, 0, 0.0, 0.0)
    assert a3["update_norm"] == 0.0
    assert (a4["small_count"], a4["released"], a4["frac_released"]) == (5, 0, 0.0)   # nothing was small before
    assert all(np.isfinite(v) for step in out for row in step.values() for v in row.values())


def test_ema_norms_follow_the_seed_definition():
    _, out = run_toy()
    ema_g = ema_w = None
    for (wa, ga, wb, gb), stats in zip(STEPS, out):
        g, w = np.array(ga + gb, float), np.array(wa + wb, float)
        ema_g = g if ema_g is None else 0.9 * ema_g + 0.1 * g
        ema_w = w if ema_w is None else 0.9 * ema_w + 0.1 * w
        assert stats[None]["ema_grad_norm"] == pytest.approx(np.linalg.norm(ema_g), rel=1e-6)
        assert stats[None]["ema_weight_norm"] == pytest.approx(np.linalg.norm(ema_w), rel=1e-6)


def numpy_reference(gs, ws, zero=1e-7, small=1e-5):
    """Per-step whole-model counters written directly from the definitions."""
    rows = []
    for t in range(1, len(gs)):
        gp, g, dw, dg = gs[t - 1], gs[t], ws[t] - ws[t - 1], gs[t] - gs[t - 1]
        sp, sn = np.abs(gp) <= small, np.abs(g) <= small
        ret = sp & sn
        flip = ret & (np.sign(gp) * np.sign(g) < 0)
        rows.append({"zero_count": np.sum(np.abs(g) < zero), "small_count": sn.sum(), "retained": ret.sum(),
                     "released": (sp & ~sn).sum(), "flips": flip.sum(),
                     "local_min": (flip & (np.sign(dw * dg) > 0)).sum(), "local_max": (flip & (np.sign(dw * dg) < 0)).sum(),
                     "w_diff": np.abs(dw[ret]).mean() if ret.any() else 0.0, "update_norm": np.linalg.norm(dw)})
    return rows


def test_random_sequence_matches_numpy_loop_and_snapshot_schedule():
    rng = np.random.default_rng(0)
    P = 200
    gs = [(rng.choice([0, 1e-8, 1e-6, 1e-3], P) * rng.choice([-1, 1], P)).astype(np.float32) for _ in range(6)]
    ws = [rng.normal(size=P).astype(np.float32) for _ in range(6)]
    p = nn.Parameter(torch.zeros(P))
    every, sparse = GradientDynamics([("w", p)]), GradientDynamics([("w", p)])
    ref = numpy_reference(gs, ws)
    for t, (g, w) in enumerate(zip(gs, ws)):
        p.data = torch.from_numpy(w)
        p.grad = torch.from_numpy(g)
        got = every.update()[None]
        if t == 4:
            sparse.snapshot()
        if t == 5:   # snapshot at t-1, update at t: the same per-step numbers as tracking every step
            sp = sparse.update()[None]   # (the EMAs differ by design: they average tracked steps only)
            assert {k: v for k, v in sp.items() if not k.startswith("ema")} == pytest.approx(
                {k: v for k, v in got.items() if not k.startswith("ema")})
        if t == 0:
            continue
        for k, v in ref[t - 1].items():
            assert got[k] == pytest.approx(float(v), rel=1e-5, abs=1e-7), (t, k)


def test_sign_summary_bins():
    model = Toy()
    tr = GradientDynamics(model)
    set_state(model, *STEPS[1])
    tr.update()
    s = tr.sign_summary(bins=2)
    assert tuple(s.shape) == (2, 2, 3)
    # layer a, g = (0, -2e-6, 3e-6 | 1e-6, 0.5): bins of 3 and 2 entries; the exact zero is in no class
    np.testing.assert_allclose(s[0].numpy(), [[0, 1 / 3, 1 / 3], [1 / 2, 0, 1 / 2]], atol=1e-7)
    np.testing.assert_allclose(s[1].numpy(), [[0, 1, 0], [1, 0, 0]])       # layer b, g = (-4e-6 | 2)
    wide = tr.sign_summary(bins=4)                                            # b has 2 entries: 2 empty bins
    np.testing.assert_allclose(wide[1].numpy(), [[0, 1, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]])
    with pytest.raises(RuntimeError):
        GradientDynamics(Toy()).sign_summary()


def test_layers_are_modules_in_order_and_frozen_params_are_skipped():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    model[0].bias.requires_grad_(False)
    tr = GradientDynamics(model)
    assert tr.layers == ["0", "2"] and tr.layer_sizes == [6, 3]
