"""Spectral statistics of weight matrices against numpy.linalg."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from ablation_harness.metrics.spectral import matrix_spectral_stats, spectral_stats, weight_matrices


def np_reference(W, topk=None):
    s = np.linalg.svd(W, compute_uv=False)
    k = len(s) if topk is None else topk
    return {"rank": np.linalg.matrix_rank(W), "spectral_norm": np.linalg.norm(W, 2),
            "condition_number": np.linalg.cond(W), "nuclear_norm": np.linalg.norm(W, "nuc"),
            "frobenius_norm": np.linalg.norm(W, "fro"), "stable_rank": np.linalg.norm(W, "fro") ** 2 / np.linalg.norm(W, 2) ** 2,
            "singular_values": s[:k], "topk_energy": (s[:k] ** 2).sum() / (s ** 2).sum()}


def check(got, ref):
    for key, val in ref.items():
        np.testing.assert_allclose(got[key], val, rtol=1e-5, err_msg=key)


def test_linear_and_conv2d_match_numpy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, kernel_size=(3, 2)), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4))
    model(torch.zeros(1, 3, 5, 5))
    stats = spectral_stats(model, topk=3)
    assert list(stats) == ["0", "3"]
    conv = model[0].weight.detach().numpy().reshape(6, 3 * 3 * 2)   # out x in*kh*kw
    check(stats["0"], np_reference(conv.astype(np.float64), 3))
    check(stats["3"], np_reference(model[3].weight.detach().numpy().astype(np.float64), 3))
    assert len(stats["0"]["singular_values"]) == 3
    json.dumps(stats)   # JSON-serialisable


def test_all_values_when_topk_is_none_and_rank_deficient_matrix():
    rng = np.random.default_rng(0)
    W = (rng.normal(size=(8, 3)) @ rng.normal(size=(3, 5))).astype(np.float32)   # rank 3
    got = matrix_spectral_stats(torch.from_numpy(W))
    assert got["rank"] == np.linalg.matrix_rank(W) == 3
    assert len(got["singular_values"]) == 5 and got["topk_energy"] == pytest.approx(1.0)
    np.testing.assert_allclose(got["singular_values"], np.linalg.svd(W.astype(np.float64), compute_uv=False), rtol=1e-6, atol=1e-6)


def test_zero_matrix_has_defined_values():
    got = matrix_spectral_stats(torch.zeros(4, 3))
    assert got["rank"] == 0 and got["stable_rank"] == 0.0 and got["condition_number"] == 0.0
    assert all(not np.isnan(v) for v in got.values() if isinstance(v, float))


def test_weight_matrices_covers_conv1d_and_skips_other_modules():
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.Flatten(), nn.Linear(8, 2))
    mats = weight_matrices(model)
    assert list(mats) == ["0", "3"] and tuple(mats["0"].shape) == (4, 6)
