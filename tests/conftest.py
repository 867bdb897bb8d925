"""Shared fixtures: tiny configs that train in about a second on the CPU."""
import os

import pytest

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture
def tiny_cfg():
    """A run config on sklearn digits that trains in well under a second."""
    from ablation_harness.config import RunConfig
    return RunConfig.model_validate({
        "study": "t", "device": "cpu", "seed": 3,
        "data": {"name": "digits", "n_train": 400, "n_val": 200},
        "model": {"name": "mlp", "width": 32, "depth": 2},
        "optim": {"lr": 3e-3},
        "train": {"epochs": 2, "batch_size": 64, "progress": False},
    })
