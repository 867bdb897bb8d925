"""metrics.invariance helpers by hand: the input scaling round trip and the per-class sample picker."""
import torch

from ablation_harness.metrics.invariance import channel_scaler, pick_per_class, to_inputs, to_pixels

META = {"mean": [0.1, 0.2, 0.3], "std": [0.5, 1.0, 2.0]}


def test_pixels_and_inputs_undo_each_other_channel_by_channel():
    mean, std = channel_scaler(META)
    assert mean.shape == std.shape == (3, 1, 1)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    px = to_pixels(x, META)
    for c in range(3):
        torch.testing.assert_close(px[:, c], x[:, c] * META["std"][c] + META["mean"][c])
    torch.testing.assert_close(to_inputs(px, META), x)


def test_pick_per_class_takes_that_many_of_every_class_sorted_by_class():
    labels = torch.tensor([2, 0, 1, 2, 0, 0, 3, 1, 2, 0, 1, 2])
    idx = pick_per_class(labels, 2, seed=4)
    assert labels[idx].tolist() == [0, 0, 1, 1, 2, 2, 3]           # class 3 has a single sample: all of it
    assert len(set(idx.tolist())) == len(idx)
    assert torch.equal(idx, pick_per_class(labels, 2, seed=4))      # seeded
    picks = {tuple(pick_per_class(labels, 2, seed=s).tolist()) for s in range(10)}
    assert len(picks) > 1                                           # ... and random across seeds
    assert labels[pick_per_class(labels, 10)].tolist() == sorted(labels.tolist())
