"""Module-level trial functions for the sweep tests (workers must be able to import them)."""
import os
import signal

from ablation_harness.sweep import run_trial


def kill_self_on_lr_01(trial):
    """Die by SIGKILL mid-trial when the trial's lr is 0.1; otherwise train normally."""
    if trial.config["optim"]["lr"] == 0.1:
        os.kill(os.getpid(), signal.SIGKILL)
    return run_trial(trial)
