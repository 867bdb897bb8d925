"""Module-level job and trial functions for the executor tests (workers must be able to import them)."""
import os
import subprocess

import torch

from ablation_harness.data import CACHE_STATS
from ablation_harness.sweep import run_trial


def square(x):
    """x * x."""
    return x * x


def fail_on_3(x):
    """Raise for x == 3, else x."""
    if x == 3:
        raise ValueError("three")
    return x


def with_worker_facts(trial):
    """`run_trial`'s record plus the worker's pid, torch threads and data-cache counters."""
    rec = run_trial(trial)
    return {**rec, "pid": os.getpid(), "threads": torch.get_num_threads(),
            "data_loads": CACHE_STATS["loads"], "data_hits": CACHE_STATS["hits"]}


def chatty_trial(trial):
    """`run_trial`, after writing to stdout (buffered), below Python to stderr and from a child process; lr 0.02 raises."""
    print(f"print from {trial.run_id}")
    os.write(2, f"fd 2 from {trial.run_id}\n".encode())
    subprocess.run(["echo", f"child of {trial.run_id}"], check=True)
    if trial.config["optim"]["lr"] == 0.02:
        raise ValueError("deliberate failure")
    return run_trial(trial)
