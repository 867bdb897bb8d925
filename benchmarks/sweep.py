"""Sweep engine: serial vs process pool (2 workers) on 16 tiny trials, harness overhead per trial, and Ray.

Trials take about a second each (an MLP on 3,000 MNIST images, three epochs), so worker start-up
(the fork server imports torch once) is part of the measured cost, as it is for a user. Prints the speed-up of the process pool (target >= 1.7x on 2 cores), the harness overhead per trial beyond
training itself (sweep wall time / trials minus the mean in-trial training time; target <= 50 ms), and
Ray's overhead per trial on the same trials (for comparison: Ray Tune was reported at 22.7 s for 100
trivial trials, ray issue 11004). Run: .venv/bin/python benchmarks/sweep.py
"""
import tempfile
import time

from ablation_harness.config import SweepPreset
from ablation_harness.sweep import load_records, make_trials, run_sweep

BASE = {"device": "cpu", "data": {"name": "mnist", "n_train": 3000, "n_val": 500},
        "model": {"name": "mlp", "width": 64, "depth": 2}, "checkpoint": {"best": False, "last": False},
        "train": {"epochs": 3, "batch_size": 32, "progress": False}}
PRESET = SweepPreset.model_validate({"study_name": "bench", "base": BASE,
                                     "grid": {"optim.lr": [1e-3, 3e-3, 1e-2, 3e-2], "model.width": [64, 96, 128, 192]}})


def timed(executor: str, workers: int) -> tuple[float, float, int]:
    """Wall time of the whole sweep, summed in-trial training time, and trial count."""
    with tempfile.TemporaryDirectory() as d:
        trials = make_trials(PRESET, d)
        t = time.perf_counter()
        run_sweep(trials, d, executor=executor, workers=workers, progress=False)
        wall = time.perf_counter() - t
        recs = load_records(d)
        assert all(r["state"] == "COMPLETE" for r in recs), recs
        return wall, sum(r["wall_time_s"] for r in recs), len(recs)


def main():
    timed("serial", 1)  # warm caches (sklearn digits, imports)
    s_wall, s_train, n = timed("serial", 1)
    p_wall, p_train, _ = timed("process", 2)
    r_wall, r_train, _ = timed("ray", 2)
    print(f"{n} trials")
    print(f"serial          {s_wall:7.2f} s   overhead/trial {1000 * (s_wall - s_train) / n:7.1f} ms")
    print(f"process (2)     {p_wall:7.2f} s   speed-up {s_wall / p_wall:.2f}x (target >= 1.7x)   "
          f"overhead/trial {1000 * (p_wall - p_train / 2) / n:7.1f} ms")
    print(f"ray (2, local)  {r_wall:7.2f} s   speed-up {s_wall / r_wall:.2f}x   "
          f"overhead/trial incl. ray.init {1000 * (r_wall - r_train / 2) / n:7.1f} ms")
    print("harness overhead per trial (serial, beyond training) target <= 50 ms")


if __name__ == "__main__":
    main()
