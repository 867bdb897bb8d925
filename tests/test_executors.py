"""Executors: the warm process pool (reuse, data cache, threads, killed workers, early stop) and warm Ray actors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ablation_harness.config import SweepPreset
from ablation_harness.sweep import (COMPLETE, FAILED, WORKER_LOG, load_records, make_trials, process_pool,
                                    run_sweep, shutdown_executors, threads_per_worker)

sys.path.insert(0, str(Path(__file__).parent))
from _executor_helpers import chatty_trial, fail_on_3, square, with_worker_facts  # noqa: E402
from _sweep_helpers import kill_self_on_lr_01  # noqa: E402

BASE = {"device": "cpu", "data": {"name": "digits", "n_train": 300, "n_val": 100},
        "model": {"name": "mlp", "width": 16, "depth": 1}, "train": {"epochs": 1, "batch_size": 100, "progress": False}}
METRICS = ("final/val/acc", "final/val/loss", "final/train/loss", "best/val/acc", "params", "steps")


def trials(root, lrs=(0.01, 0.02, 0.03, 0.04), seeds=(0,)):
    preset = SweepPreset.model_validate({"study_name": "ex", "base": BASE, "grid": {"optim.lr": list(lrs)},
                                         "seeds": list(seeds)})
    return make_trials(preset, root)


def by_hash(out_dir, keys=METRICS) -> dict:
    return {r["config_hash"]: tuple(r[k] for k in keys) for r in load_records(out_dir)}


@pytest.fixture(autouse=True)
def fresh_executors():
    """Every test starts and ends without warm workers."""
    shutdown_executors()
    yield
    shutdown_executors()


def test_pool_is_reused_across_sweeps_and_loads_data_once_per_worker(tmp_path):
    run_sweep(trials(tmp_path / "a"), tmp_path / "a", with_worker_facts, "process", 2, progress=False)
    pids = set(process_pool(2).pids())
    run_sweep(trials(tmp_path / "b", lrs=(0.05, 0.06, 0.07)), tmp_path / "b", with_worker_facts, "process", 2, progress=False)
    recs = load_records(tmp_path / "a") + load_records(tmp_path / "b")
    assert len(pids) == 2 and {r["pid"] for r in recs} <= pids and set(process_pool(2).pids()) == pids
    assert all(r["state"] == COMPLETE for r in recs)
    # every trial uses the same data config: each worker loaded it once and served later trials from its cache
    for pid in {r["pid"] for r in recs}:
        mine = [r for r in recs if r["pid"] == pid]
        assert max(r["data_loads"] for r in mine) == 1
        assert max(r["data_hits"] for r in mine) == len(mine) - 1
    assert {r["threads"] for r in recs} == {threads_per_worker(2)}


SWEEP = """\
import json, sys
sys.path.insert(0, sys.argv[3])
from _executor_helpers import chatty_trial
from ablation_harness.config import SweepPreset
from ablation_harness.sweep import make_trials, run_sweep
run_sweep(make_trials(SweepPreset.model_validate(json.loads(sys.argv[2])), sys.argv[1]), sys.argv[1], chatty_trial,
          "process", 2, progress=False)
"""


def test_pool_workers_write_into_the_sweep_log_not_onto_the_terminal(tmp_path):
    """What trials print (from Python, below it, from children) lands in `workers.log`; the caller's stdout and
    stderr stay empty; a failed trial keeps its traceback in its record and error.txt."""
    preset = {"study_name": "ex", "base": BASE, "grid": {"optim.lr": [0.01, 0.02, 0.03]}}
    r = subprocess.run([sys.executable, "-c", SWEEP, str(tmp_path), json.dumps(preset), str(Path(__file__).parent)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr
    recs = {x["run_id"]: x for x in load_records(tmp_path)}
    log = (tmp_path / WORKER_LOG).read_text()
    assert len(recs) == 3 and all(f"{how} {run_id}\n" in log for run_id in recs
                                  for how in ("print from", "fd 2 from", "child of")), log
    failed = [x for x in recs.values() if x["state"] == FAILED]
    assert [x["error"] for x in failed] == ["ValueError: deliberate failure"]
    assert "Traceback" in (Path(failed[0]["run_dir"]) / "error.txt").read_text()


@pytest.fixture
def worker_threads():
    """Run the test process with the workers' torch thread count (a different count may change the last bits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads_per_worker(2))
    yield
    torch.set_num_threads(before)


def test_pool_results_equal_serial(tmp_path, worker_threads):
    run_sweep(trials(tmp_path / "s", seeds=(0, 1)), tmp_path / "s", progress=False)
    run_sweep(trials(tmp_path / "p", seeds=(0, 1)), tmp_path / "p", executor="process", workers=2, progress=False)
    serial, pool = by_hash(tmp_path / "s"), by_hash(tmp_path / "p")
    assert len(serial) == 8 and serial == pool  # bit for bit: which worker runs a trial does not matter


def test_killed_worker_fails_its_trial_and_the_pool_recovers(tmp_path):
    ts = trials(tmp_path / "k", lrs=(0.01, 0.1, 0.03, 0.04))
    run_sweep(ts, tmp_path / "k", kill_self_on_lr_01, "process", 2, progress=False)
    states = {r["optim.lr"]: r["state"] for r in load_records(tmp_path / "k")}
    assert states == {0.01: COMPLETE, 0.1: FAILED, 0.03: COMPLETE, 0.04: COMPLETE}
    assert "exit code -9" in [r for r in load_records(tmp_path / "k") if r["state"] == FAILED][0]["error"]
    assert len(process_pool(2).pids()) == 2  # the dead worker was replaced
    run_sweep(trials(tmp_path / "n"), tmp_path / "n", executor="process", workers=2, progress=False)
    assert [r["state"] for r in load_records(tmp_path / "n")] == [COMPLETE] * 4


def test_raising_job_and_early_stop_leave_no_stale_results():
    pool = process_pool(2)
    assert sorted(pool.imap_unordered(square, range(6))) == [(i, True, i * i) for i in range(6)]
    out = {i: (ok, v) for i, ok, v in pool.imap_unordered(fail_on_3, range(5))}
    assert out[3][0] is False and "ValueError: three" in out[3][1] and out[4] == (True, 4)
    it = pool.imap_unordered(square, range(10, 20))
    next(it)
    it.close()  # stop early: the busy worker is killed, its result never arrives
    assert sorted(pool.imap_unordered(square, range(4))) == [(i, True, i * i) for i in range(4)]
    left = pool.imap_unordered(square, range(30, 40))
    next(left)  # abandoned without closing: the late answer of its other job is told apart by its job id
    assert sorted(pool.imap_unordered(square, range(4))) == [(i, True, i * i) for i in range(4)]


@pytest.fixture
def local_ray(monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    # the local workers inherit the environment: let them import this folder's helper modules
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    for attempt in range(3):  # on a loaded machine the raylet can give up on its agents after 15 s (ray issue 65983)
        try:
            ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                     object_store_memory=2**28)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    yield ray
    shutdown_executors()
    ray.shutdown()


def test_ray_actors_stay_warm_and_match_serial(tmp_path, local_ray, worker_threads):
    from ablation_harness.sweep import ray_actors
    run_sweep(trials(tmp_path / "s"), tmp_path / "s", progress=False)
    run_sweep(trials(tmp_path / "r"), tmp_path / "r", with_worker_facts, "ray", 2, progress=False)
    pids = set(ray_actors(2).pids())
    run_sweep(trials(tmp_path / "r2", lrs=(0.05, 0.06)), tmp_path / "r2", with_worker_facts, "ray", 2, progress=False)
    recs = load_records(tmp_path / "r") + load_records(tmp_path / "r2")
    assert len(pids) == 2 and {r["pid"] for r in recs} <= pids and set(ray_actors(2).pids()) == pids
    assert all(max(r["data_loads"] for r in recs if r["pid"] == p) == 1 for p in {r["pid"] for r in recs})
    assert by_hash(tmp_path / "s") == by_hash(tmp_path / "r")


def test_ray_dead_actor_fails_its_trial_and_is_replaced(tmp_path, local_ray):
    from ablation_harness.sweep import ray_actors
    ts = trials(tmp_path / "k", lrs=(0.01, 0.1, 0.03))
    run_sweep(ts, tmp_path / "k", kill_self_on_lr_01, "ray", 2, progress=False)
    states = {r["optim.lr"]: r["state"] for r in load_records(tmp_path / "k")}
    assert states == {0.01: COMPLETE, 0.1: FAILED, 0.03: COMPLETE}
    assert len(set(ray_actors(2).pids())) == 2


@pytest.mark.parametrize("executor", ["serial", "process"])
def test_map_jobs_keeps_input_order_and_raises_on_failure(executor):
    from ablation_harness.sweep import map_jobs
    assert map_jobs(square, range(7), executor, 2) == [i * i for i in range(7)]
    with pytest.raises((RuntimeError, ValueError), match="three"):
        map_jobs(fail_on_3, range(5), executor, 2)


def test_report_gives_studies_one_worker_per_core(tmp_path):
    import nbformat
    from ablation_harness.report import study_params

    def notebook(name, params):
        cell = nbformat.v4.new_code_cell(params)
        cell.metadata["tags"] = ["parameters"]
        nb = tmp_path / f"{name}.ipynb"
        nbformat.write(nbformat.v4.new_notebook(cells=[cell]), str(nb))
        return nb

    pooled = notebook("pooled", 'profile = "report"\nout_dir = "x"\nexecutor = "serial"\nworkers = 2')
    single = notebook("single", 'profile = "report"\nout_dir = "x"\nthreads = 1')
    base = {"out_dir": "o"}
    cores = os.cpu_count()
    # a study keeps its own executor (its numbers were made with it) and gets one worker per core
    assert study_params(pooled, "report", "o") == {**base, "profile": "report", "workers": cores}
    assert study_params(pooled, "full", "o", executor="ray") == {**base, "profile": "full", "executor": "ray", "workers": cores}
    assert study_params(pooled, "report", "o", executor="serial") == {**base, "profile": "report", "executor": "serial"}
    assert study_params(pooled, "smoke", "o") == {**base, "profile": "smoke"}  # smoke: the study's own defaults
    assert study_params(single, "report", "o") == {**base, "profile": "report"}


def test_a_finished_sweep_starts_no_workers(tmp_path):
    import ablation_harness.sweep as sweep
    ts = trials(tmp_path, lrs=(0.01,))
    run_sweep(ts, tmp_path, progress=False)  # serial
    run_sweep(ts, tmp_path, executor="process", workers=2, progress=False)
    run_sweep(ts, tmp_path, executor="ray", workers=2, progress=False)
    assert sweep._POOL is None and sweep._RAY is None and len(load_records(tmp_path)) == 1
