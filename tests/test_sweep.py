"""sweep / ablate: states, resume, executors, kill -9, invalid presets."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ablation_harness.config import SweepPreset, StudyPreset
from ablation_harness.core import read_jsonl
from ablation_harness.sweep import COMPLETE, DIVERGED, FAILED, load_records, make_trials, run_sweep, shutdown_executors

sys.path.insert(0, str(Path(__file__).parent))
from _sweep_helpers import kill_self_on_lr_01  # noqa: E402

BASE = {"device": "cpu", "data": {"name": "digits", "n_train": 300, "n_val": 100},
        "model": {"name": "mlp", "width": 16, "depth": 1}, "train": {"epochs": 1, "batch_size": 100, "progress": False}}


def sweep(lrs=(0.01, 0.03), seeds=(0, 1), **base):
    return SweepPreset.model_validate({"study_name": "sw", "base": {**BASE, **base}, "grid": {"optim.lr": list(lrs)}, "seeds": list(seeds)})


def test_states_and_summary(tmp_path):
    preset = StudyPreset.model_validate({
        "study_name": "st", "metric": "val/acc", "goal": "max", "seeds": [0, 1], "baseline": BASE,
        "variants": [{"name": "diverge", "overrides": {"optim.name": "sgd", "optim.lr": 1e12}},
                     {"name": "no_data", "overrides": {"data.name": "cifar10", "data.root": str(tmp_path / "none")}}]})
    trials = make_trials(preset, tmp_path)
    summary = run_sweep(trials, tmp_path, progress=False)
    recs = {r["variant"]: r["state"] for r in load_records(tmp_path)}
    assert recs == {"baseline": COMPLETE, "diverge": DIVERGED, "no_data": FAILED}
    failed = [r for r in load_records(tmp_path) if r["state"] == FAILED][0]
    assert "DataUnavailable" in (Path(failed["run_dir"]) / "error.txt").read_text()
    base = [r for r in load_records(tmp_path) if r["variant"] == "baseline"]
    row = summary.set_index("variant").loc["baseline"]
    accs = [r["final/val/acc"] for r in base]
    assert row["final/val/acc_mean"] == pytest.approx(sum(accs) / 2) and row["n_seeds"] == 2
    assert pd.read_csv(tmp_path / "summary.csv").shape[0] == len(summary)
    # resume: nothing COMPLETE/DIVERGED is redone; failed only with retry_failed
    n = len(load_records(tmp_path))
    run_sweep(trials, tmp_path, progress=False)
    assert len(load_records(tmp_path)) == n
    run_sweep(trials, tmp_path, retry_failed=True, progress=False)
    assert len(load_records(tmp_path)) == n + 2
    assert any(p.name.endswith(".attempt1") for p in (tmp_path / "st").iterdir())


def test_process_pool_survives_a_killed_worker(tmp_path):
    trials = make_trials(sweep(lrs=(0.01, 0.1, 0.03), seeds=(0,)), tmp_path)
    run_sweep(trials, tmp_path, trial_fn=kill_self_on_lr_01, executor="process", workers=2, progress=False)
    states = {r["optim.lr"]: r["state"] for r in load_records(tmp_path)}
    assert states == {0.01: COMPLETE, 0.1: FAILED, 0.03: COMPLETE}
    err = [r for r in load_records(tmp_path) if r["state"] == FAILED][0]["error"]
    assert "exit code -9" in err


def test_process_pool_matches_serial(tmp_path):
    trials = make_trials(sweep(seeds=(0,)), tmp_path / "a")
    run_sweep(trials, tmp_path / "a", progress=False)
    trials_b = make_trials(sweep(seeds=(0,)), tmp_path / "b")
    run_sweep(trials_b, tmp_path / "b", executor="process", workers=2, progress=False)
    acc = lambda d: sorted((r["config_hash"], r["final/val/acc"]) for r in load_records(d))
    assert acc(tmp_path / "a") == acc(tmp_path / "b")


def test_ray_executor_on_a_local_instance(tmp_path):
    pytest.importorskip("ray")
    trials = make_trials(sweep(seeds=(0,)), tmp_path)
    try:
        run_sweep(trials, tmp_path, executor="ray", workers=2, progress=False)
    finally:
        shutdown_executors()  # the warm actors and the local Ray this sweep started
    assert [r["state"] for r in load_records(tmp_path)] == [COMPLETE, COMPLETE]


def ablate(*args, cwd, **kw):
    return subprocess.Popen([sys.executable, "-m", "ablation_harness.ablate", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_killed_sweep_resumes_without_redoing(tmp_path):
    slow = {**BASE, "train": {**BASE["train"], "epochs": 30}}  # trials long enough (~0.3 s) for the kill to land mid-sweep
    preset = {"schema": "sweep/v1", "study_name": "k", "base": slow, "grid": {"optim.lr": [0.01, 0.02, 0.03, 0.04]}, "seeds": [0]}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(preset))
    proc = ablate("--config", "p.yaml", "--out_dir", "out", cwd=tmp_path, start_new_session=True)
    results = tmp_path / "out" / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (results.exists() and read_jsonl(results)):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = read_jsonl(results)
    assert 1 <= len(first) < 4
    done = {r["config_hash"]: Path(r["run_dir"]) / "summary.json" for r in first}
    mtimes = {h: p.stat().st_mtime_ns for h, p in done.items()}
    out, err = ablate("--config", "p.yaml", "--out_dir", "out", cwd=tmp_path).communicate(timeout=300)
    recs = read_jsonl(results)
    assert sorted(r["state"] for r in recs) == [COMPLETE] * 4, err
    assert len({r["config_hash"] for r in recs}) == 4
    assert all(done[h].stat().st_mtime_ns == m for h, m in mtimes.items())  # finished trials not redone


@pytest.mark.parametrize("text,needle", [
    ("schema: sweep/v1\nstudy_name: x\nbase: {optim: {lr: -1}}\n", "optim.lr"),
    ("schema: sweep/v1\nstudy_name: x\ngrid: {optim.lr: [0.1, -0.1]}\n", "optim.lr"),
    ("schema: study/v1\nstudy_name: x\nvariants: [{name: a, overrides: {model.nme: 3}}]\n", "model.nme"),
    ("schema: study/v1\nstudy_name: x\ngoal: maximize\n", "goal"),
])
def test_invalid_presets_exit_2_before_any_work(tmp_path, monkeypatch, capsys, text, needle):
    from ablation_harness.ablate import main
    (tmp_path / "p.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    assert main(["--config", "p.yaml", "--out_dir", "out"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "out").exists()


def test_dry_run_lists_trials_and_runs_nothing(tmp_path, monkeypatch, capsys):
    from ablation_harness.ablate import main
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"schema": "sweep/v1", "study_name": "d", "base": BASE,
                                                     "grid": {"optim.lr": [0.01, 0.02]}, "seeds": [0, 1, 2]}))
    monkeypatch.chdir(tmp_path)
    assert main(["--config", "p.yaml", "--out_dir", "out", "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 + 6 and all("PENDING" in l for l in lines[1:])
    assert not (tmp_path / "out").exists()
