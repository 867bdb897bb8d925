"""A test-only callback that holds one trial until the test lets it go: kill tests without timing."""
import time
from pathlib import Path

from ablation_harness.train import Callback, register_callback


@register_callback("gate")
class Gate(Callback):
    """When the trial's lr is `lr`: touch `<folder>/waiting`, then wait until `<folder>/go` exists."""

    def __init__(self, folder: str, lr: float):
        self.folder, self.lr = Path(folder), lr

    def on_fit_start(self, trainer):
        if trainer.cfg.optim.lr == self.lr:
            (self.folder / "waiting").touch()
            while not (self.folder / "go").exists():
                time.sleep(0.02)
