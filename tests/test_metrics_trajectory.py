"""Checkpoint trajectory metrics against numbers worked out by hand."""
import math

import pytest
import torch
from torch import nn

from ablation_harness.metrics.trajectory import flatten_params, select_params, step_stats, trajectory, vector_step_stats


def T(*v):
    return torch.tensor(v, dtype=torch.float32)


PREV = {"gru.weight_ih": T(3.0, 0.0), "gru.bias": T(4.0), "head.weight": T(1.0, 0.0), "bn.running_mean": T(9.0)}
CURR = {"gru.weight_ih": T(0.0, 4.0), "gru.bias": T(3.0), "head.weight": T(1.0, 1.0), "bn.running_mean": T(-9.0)}


def test_step_stats_by_hand():
    rows = {r["layer"]: r for r in step_stats(PREV, CURR)}
    # gru: w_prev = (3, 0, 4), w = (0, 4, 3): |w| = 5, |w_prev| = 5, dw = (-3, 4, -1), <w_prev, w> = 12
    g = rows["gru"]
    assert g["weight_norm"] == pytest.approx(5.0)
    assert g["step_norm"] == pytest.approx(math.sqrt(26))
    assert g["relative_step"] == pytest.approx(math.sqrt(26) / 5)
    assert g["step_cosine"] == pytest.approx(12 / 25)
    # head: (1, 0) -> (1, 1)
    h = rows["head"]
    assert (h["weight_norm"], h["step_norm"], h["relative_step"]) == pytest.approx((math.sqrt(2), 1.0, 1.0))
    assert h["step_cosine"] == pytest.approx(1 / math.sqrt(2))
    # whole model (running_mean is a buffer, left out): w_prev = (3,0,4,1,0), w = (0,4,3,1,1)
    a = rows[None]
    assert a["weight_norm"] == pytest.approx(math.sqrt(27))
    assert a["step_norm"] == pytest.approx(math.sqrt(27))
    assert a["relative_step"] == pytest.approx(math.sqrt(27) / math.sqrt(26))
    assert a["step_cosine"] == pytest.approx(13 / math.sqrt(26 * 27))


def test_filter_by_prefix_and_flat_vectors():
    assert list(select_params(PREV, "gru")) == ["gru.weight_ih", "gru.bias"]
    assert [r["layer"] for r in step_stats(PREV, CURR, include="gru")] == [None, "gru"]
    only = step_stats(PREV, CURR, include="gru", per_layer=False)
    assert len(only) == 1 and only[0]["step_cosine"] == pytest.approx(12 / 25)
    v = vector_step_stats(flatten_params(PREV, "gru"), flatten_params(CURR, "gru"))
    assert v["step_cosine"] == pytest.approx(12 / 25) and v["step_norm"] == pytest.approx(math.sqrt(26))
    assert flatten_params(PREV, lambda n: n.startswith("head")).tolist() == [1.0, 0.0]


def test_zero_weights_give_zero_not_nan():
    r = vector_step_stats(torch.zeros(3), T(1.0, 2.0, 2.0))
    assert r == {"weight_norm": 3.0, "step_norm": 3.0, "relative_step": 0.0, "step_cosine": 0.0}


def test_trajectory_over_checkpoints_and_modules():
    lin = nn.Linear(2, 1)
    s0 = {k: v.clone() for k, v in lin.state_dict().items()}
    with torch.no_grad():
        lin.weight.mul_(2.0)
    s1 = {k: v.clone() for k, v in lin.state_dict().items()}
    rows = trajectory([s0, s1, lin], steps=[0, 10, 20])
    assert [(r["step"], r["layer"]) for r in rows] == [(10, None), (10, "weight"), (10, "bias"), (20, None), (20, "weight"), (20, "bias")]
    w = rows[1]
    assert w["relative_step"] == pytest.approx(1.0) and w["step_cosine"] == pytest.approx(1.0)
    assert rows[3]["step_norm"] == 0.0 and rows[3]["step_cosine"] == pytest.approx(1.0)
    with pytest.raises(KeyError):
        step_stats({"a": T(1.0)}, {"b": T(1.0)})
