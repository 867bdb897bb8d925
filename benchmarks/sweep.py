"""Sweep executors against serial: 16 trials of about 0.2 s and 16 of about 1 s, and Ray's per-trial overhead.

Serial runs in this process with torch's default thread count; the process pool has 2 workers with
cores // 2 torch threads each. Both are warm, as they are for every sweep of a process after its first
(a notebook kernel, a report study): serial has imported everything and trained one trial; the pool's
workers have run a warm-up sweep (its cost, the pool's one-time start-up, is printed on its own line).
Figures per executor: wall time of the sweep, CPU seconds (this process plus the workers), speed-up
against serial, and harness overhead per trial = (workers x wall - time spent in Trainer.fit) / trials,
i.e. the worker time per trial that is not training (data loading, run dir, records, dispatch), and the
CPU per trial beyond serial's on the same trials (Ray: the driver and the actors; raylet/GCS not counted).
Ray: `ray.init` is timed on its own; then a first sweep (warm-up: actors start and import) and the
measured sweep on the warm actors, whose overhead per trial is the target (<= 50 ms).
Targets on 2 quiet cores: process pool >= 1.8x serial on the ~1 s trials, >= 1.5x on the ~0.2 s trials.

Run: .venv/bin/python benchmarks/sweep.py [--quick] [--no-ray]
"""
import argparse
import functools
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from ablation_harness.config import SweepPreset
from ablation_harness.sweep import load_records, make_trials, process_pool, run_sweep, shutdown_executors

print = functools.partial(print, flush=True)  # noqa: A001 (progress shows while it runs)

GRID = {"optim.lr": [1e-3, 3e-3, 1e-2, 3e-2], "model.width": [64, 96, 128, 192]}
WORKLOADS = {  # name: (data sizes, epochs); the MLP and grid are shared
    "~0.2 s": ({"n_train": 3000, "n_val": 500}, 3),
    # 7 epochs took 0.68 s per serial trial on a quiet machine; a trial's CPU time grows as 0.03 + 0.12 x epochs
    # (s, one thread, measured at 7 and 11 epochs), so 10 epochs cost 1.4x that: ~0.96 s
    "~1 s": ({"n_train": 6000, "n_val": 500}, 10),
}


def preset(data: dict, epochs: int, n: int) -> SweepPreset:
    """n trials (from the 4 x 4 grid) of an MLP on the shipped MNIST subset."""
    base = {"device": "cpu", "data": {"name": "mnist", **data}, "model": {"name": "mlp", "width": 64, "depth": 2},
            "checkpoint": {"best": False, "last": False}, "train": {"epochs": epochs, "batch_size": 32, "progress": False}}
    grid = GRID if n == 16 else {"optim.lr": GRID["optim.lr"][: n // 2], "model.width": GRID["model.width"][:2]}
    return SweepPreset.model_validate({"study_name": "bench", "base": base, "grid": grid})


def cpu_seconds(pids=()) -> float:
    """CPU seconds of this process plus the given worker processes (psutil, when installed)."""
    own = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    try:
        import psutil
    except ImportError:
        return own
    total = own
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def sweep(p: SweepPreset, executor: str, workers: int, pids=()) -> dict:
    """Run the preset once in a fresh folder: wall, CPU, time in Trainer.fit, trials."""
    with tempfile.TemporaryDirectory() as d:
        trials = make_trials(p, d)
        c0, t0 = cpu_seconds(pids), time.perf_counter()
        run_sweep(trials, d, executor=executor, workers=workers, progress=False)
        wall, cpu = time.perf_counter() - t0, cpu_seconds(pids) - c0
        recs = load_records(d)
        assert len(recs) == len(trials) and all(r["state"] == "COMPLETE" for r in recs), recs
        fit = sum(json.loads((Path(r["run_dir"]) / "summary.json").read_text())["wall_time_s"] for r in recs)
        return {"wall": wall, "cpu": cpu, "fit": fit, "n": len(recs), "workers": workers}


def overhead_ms(m: dict) -> float:
    """Worker time per trial not spent in Trainer.fit, in ms."""
    return 1000 * (m["workers"] * m["wall"] - m["fit"]) / m["n"]


def row(label: str, m: dict, serial: dict | None = None, target: str = "", cpu: bool = True) -> str:
    """One line of the table; `extra CPU` is the CPU per trial beyond serial's on the same trials."""
    speed = f"{serial['wall'] / m['wall']:5.2f}x" if serial else "   1x"
    extra = f"{1000 * (m['cpu'] - serial['cpu']) / m['n']:8.1f}" if serial and cpu else f"{'':8}"
    return f"  {label:<26} {m['wall']:7.2f} {m['cpu']:7.2f} {speed:>9} {overhead_ms(m):9.1f} {extra}   {target}"


def header() -> str:
    return (f"  {'executor':<26} {'wall s':>7} {'CPU s':>7} {'vs serial':>9} {'ovh ms':>9} {'extra CPU':>8}   target\n"
            f"  {'':<26} {'':>7} {'':>7} {'':>9} {'/trial':>9} {'ms/trial':>8}")


def dispatch_ms(imap, n: int = 500) -> float:
    """Wall time per job of `n` trivial jobs (`abs`) through an executor's imap: its own overhead, in ms."""
    list(imap(abs, range(10)))
    t0 = time.perf_counter()
    list(imap(abs, range(n)))
    return 1000 * (time.perf_counter() - t0) / n


def bench_pool(n: int, workers: int = 2) -> None:
    """Serial vs the warm process pool on each workload."""
    cold = None
    for name, (data, epochs) in WORKLOADS.items():
        p = preset(data, epochs, n)
        sweep(preset(data, epochs, 2), "serial", 1)                  # imports, first-call costs
        s = sweep(p, "serial", 1)
        if cold is None:
            t0 = time.perf_counter()
            sweep(preset(data, epochs, 2), "process", workers)       # pool start: fork server, workers, data
            cold = time.perf_counter() - t0
        else:
            sweep(preset(data, epochs, 2), "process", workers)       # workers load this workload's data
        q = sweep(p, "process", workers, process_pool(workers).pids())
        target = {"~0.2 s": ">= 1.5x", "~1 s": ">= 1.8x"}[name]
        print(f"\n{n} trials of {name} (mean serial trial {s['wall'] / s['n']:.2f} s, of which fit {s['fit'] / s['n']:.2f} s)")
        print(header())
        print(row(f"serial ({torch.get_num_threads()} torch threads)", s))
        print(row(f"process pool ({workers} x {process_pool(workers).threads} thr)", q, s, target))
    print(f"\nprocess pool start-up (fork server, {workers} workers, first 2 trials): {cold:.2f} s, once per process")
    print(f"process pool dispatch: {dispatch_ms(process_pool(workers).imap_unordered):.3f} ms per trivial job")
    shutdown_executors()


def bench_ray(n: int, workers: int = 2) -> None:
    """Ray on a local instance: init, warm-up sweep, measured sweep on warm actors."""
    try:
        import ray
    except ImportError:
        print("\nray: not installed, skipped")
        return
    from ablation_harness.sweep import ray_actors, ray_imap_unordered
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    data, epochs = WORKLOADS["~0.2 s"]
    p = preset(data, epochs, n)
    sweep(preset(data, epochs, 2), "serial", 1)
    s = sweep(p, "serial", 1)
    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             object_store_memory=2**28)
    init = time.perf_counter() - t0
    try:
        first = sweep(p, "ray", workers)
        pids = ray_actors(workers).pids()
        warm = sweep(p, "ray", workers, pids)
        print(f"\nRay, local instance, {workers} actors, {n} trials of ~0.2 s: ray.init {init:.2f} s")
        print(header())
        print(row("serial (same process)", s))
        print(row("ray, first sweep (cold)", first, s, "(actors start and import)", cpu=False))
        print(row("ray, warm actors", warm, s, "overhead <= 50 ms"))
        imap = functools.partial(ray_imap_unordered, workers=workers)
        print(f"Ray dispatch on the warm actors: {dispatch_ms(imap):.3f} ms per trivial job")
    finally:
        shutdown_executors()
        ray.shutdown()


def main(argv=None):
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--quick", action="store_true", help="8 trials per workload: a short check, not the published figures")
    a.add_argument("--no-ray", action="store_true")
    a.add_argument("--serial-threads", type=int, help="torch threads for serial (default: torch's own); on a loaded "
                   "machine two threads can run tens of times slower, which makes any ratio meaningless")
    args = a.parse_args(argv)
    if args.serial_threads:
        torch.set_num_threads(args.serial_threads)
    n = 8 if args.quick else 16
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__} (default {torch.get_num_threads()} threads); "
          f"load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    bench_pool(n)
    if not args.no_ray:
        bench_ray(n)
    print(f"\nload average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          "(above ~0.5 the machine was shared: wall ratios are depressed)")


if __name__ == "__main__":
    main()
