"""models: shapes and parameter counts (counted independently from the layer formulas)."""
import torch

from ablation_harness.config import ModelConfig
from ablation_harness.models import CNNGRU, MLP, SmallCNN, TinyCNN, build_model, count_params


def conv(cin, cout, k=3):
    return cin * cout * k * k + cout


def test_tinycnn_under_10k_on_both_inputs():
    for c, hw in ((3, 32), (1, 28)):
        m = TinyCNN(c, 10)
        expected = conv(c, 16) + conv(16, 16) + conv(16, 32) + 32 * 10 + 10
        assert count_params(m) == expected < 10_000
        assert m(torch.zeros(2, c, hw, hw)).shape == (2, 10)
    assert count_params(TinyCNN(3)) == 7738  # the seed's published count


def test_mlp_layers_and_batchnorm():
    m = MLP(784, 64, 3, 10, batchnorm=True)
    expected = (784 * 64 + 64) + 2 * (64 * 64 + 64) + 3 * 2 * 64 + (64 * 10 + 10)
    assert count_params(m) == expected
    assert m(torch.zeros(5, 1, 28, 28)).shape == (5, 10)
    assert m.layer_names() == ["body.fc1", "body.bn1", "body.fc2", "body.bn2", "body.fc3", "body.bn3", "head"]


def test_cnn_gru_shapes_and_causality():
    m = CNNGRU(channels=8, hidden=16).eval()
    x = torch.randn(2, 6, 3, 6, 7)
    pol, val = m(x)
    assert pol.shape == (2, 6, 7) and val.shape == (2, 6) and val.abs().max() <= 1
    gru_in = 8 * 42
    assert count_params(m.gru) == 3 * (16 * gru_in + 16 * 16 + 2 * 16)
    x2 = x.clone()
    x2[:, 4:] = 0  # changing later positions leaves earlier outputs alone
    assert torch.allclose(m(x2)[0][:, :4], pol[:, :4], atol=1e-6)
    assert m.hidden_states(x).shape == (2, 6, 16)


def test_small_cnn_and_registry():
    m = SmallCNN((3, 32, 32), 10)
    assert m(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    assert count_params(m) == conv(3, 32) + conv(32, 64) + conv(64, 64) + (64 * 8 * 8 * 64 + 64) + (64 * 10 + 10)
    built = build_model(ModelConfig(name="mlp", width=16, depth=2), (1, 8, 8), 10)
    assert isinstance(built, MLP) and built(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
