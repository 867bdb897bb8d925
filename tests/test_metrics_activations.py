"""Forward-hook capture: values against direct module calls, hook removal, modes."""
import pytest
import torch
from torch import nn

from ablation_harness.metrics.activations import capture, capture_stream, default_layers, hooked, iter_activations


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 16, 3))


def no_hooks(model):
    return all(not m._forward_hooks for m in model.modules())


def test_capture_equals_direct_computation_and_flattens():
    model, x = net(), torch.randn(5, 1, 4, 4)
    model.train()
    acts = capture(model, x)
    assert list(acts) == default_layers(model) == ["0", "1", "4"]
    model.eval()
    with torch.no_grad():
        c = model[0](x)
        b = model[1](c)
        ref = model[4](torch.relu(b).flatten(1))
    torch.testing.assert_close(acts["0"], c.reshape(5, -1))
    torch.testing.assert_close(acts["1"], b.reshape(5, -1))
    torch.testing.assert_close(acts["4"], ref)
    assert no_hooks(model)


def test_training_mode_restored_and_bn_stats_untouched():
    model = net().train()
    before = model[1].running_mean.clone()
    capture(model, torch.randn(8, 1, 4, 4) + 3)
    assert model.training and torch.equal(model[1].running_mean, before)


def test_hooks_removed_when_forward_raises():
    model = net()
    with pytest.raises(RuntimeError):
        capture(model, torch.randn(2, 3, 4, 4))   # wrong channel count
    assert no_hooks(model)
    with pytest.raises(KeyError):
        with hooked(model, ["nope"]):
            pass
    assert no_hooks(model)


def test_stream_equals_one_big_batch_and_stops_early():
    model, x, y = net(), torch.randn(10, 1, 4, 4), torch.arange(10)
    full = capture(model, x, layers=["4", "0"])
    batches = [(x[i:i + 3], y[i:i + 3]) for i in range(0, 10, 3)]
    acts, labels = capture_stream(model, batches, layers=["4", "0"])
    assert list(acts) == ["4", "0"] and torch.equal(labels, y)
    for k in full:
        torch.testing.assert_close(acts[k], full[k])
    part, lab = capture_stream(model, batches, layers=["4"], max_samples=5)
    assert part["4"].shape[0] == 5 and lab.tolist() == [0, 1, 2, 3, 4]
    assert no_hooks(model) and model.training
    it = iter_activations(model, [x[:2]], layers=["0"])
    out, no_label = next(it)
    assert no_label is None and out["0"].shape == (2, 2 * 16)
    it.close()
    assert no_hooks(model)


def test_tuple_outputs_take_the_first_element():
    gru = nn.GRU(3, 4, batch_first=True)
    model = nn.Sequential()
    model.add_module("gru", gru)
    x = torch.randn(2, 5, 3)
    acts = capture(model, x)
    with torch.no_grad():
        ref = gru(x)[0].reshape(2, -1)
    torch.testing.assert_close(acts["gru"], ref)
