"""The `grad_histograms` callback sends one histogram per parameter gradient to the sinks, every N steps."""
import torch

from ablation_harness.metrics.callbacks import GradHistogramsCallback


class _Sinks:
    def __init__(self):
        self.seen = []

    def histogram(self, tag, values, step):
        self.seen.append((tag, step, values.detach().clone()))


class _Trainer:
    def __init__(self, model):
        self.model, self.sinks, self.step = model, _Sinks(), 0


def test_grad_histograms_every_n_steps_hold_the_gradients():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    t, cb = _Trainer(model), GradHistogramsCallback(every=2)
    for t.step in range(5):                       # optimizer steps 1..5 (the hook sees step + 1)
        model.zero_grad()
        model(torch.randn(4, 3)).square().sum().backward()
        cb.on_after_backward(t)
        if t.step + 1 == 4:
            expected = model.weight.grad.clone()
    assert [(tag, step) for tag, step, _ in t.sinks.seen] == [("grad/weight", 2), ("grad/bias", 2),
                                                               ("grad/weight", 4), ("grad/bias", 4)]
    assert torch.equal(t.sinks.seen[2][2], expected)
