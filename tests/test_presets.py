"""Every shipped preset runs one tiny trial through the real `ablate` command (issue 13, names from any entry point).

Each preset is copied with its sizes shrunk (one cell, one seed), then run by the `ablate` console script in a
fresh process, which imports no study module before it needs one: the names resolve from the registries.
"""
import json
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest
import yaml

from ablation_harness.core import read_jsonl

BIN = Path(sys.executable).parent
CONFIGS = files("ablation_harness") / "configs"
SHIPPED = sorted(p.name for p in CONFIGS.iterdir() if p.name.endswith(".yaml"))


def set_path(d: dict, dotted: str, value) -> None:
    """Set `a.b.c` in nested dicts in place."""
    *parents, leaf = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[leaf] = value


# dotted overrides of the base config that make one trial take seconds; `None` as grid: keep the first value
SHRINK = {
    "ablation_baseline.yaml": {"data.n_train": 64, "data.n_val": 64},
    "factorial.yaml": {"train.epochs": 1, "checkpoint.every": 1, "data.root": "{tmp}/cache",
                       "data.options": {"n_games": 12, "game_seed": 0, "depth": 1, "temperature": 5.0, "mirror": True},
                       "model.channels": 4, "model.hidden": 4},
    "phase_2_batch_sweep.yaml": {"train.max_steps": 4, "data.n_train": 64, "data.n_val": 64, "data.n_test": 16,
                                 "callbacks": [{"name": "batch_scaling_log", "log_every": 2, "val_points": 2}]},
    "greedy_chain.yaml": {"data.n_train": 128, "data.n_val": 64, "data.n_test": 64, "model.width": 16, "train.epochs": 1,
                          "train.analysis_batch_size": 32,
                          "callbacks": [{"name": "chain_metrics", "every": 4, "samples": 32},
                                        {"name": "plateau_stop", "window": 5, "rel_tol": 0.01, "monitor": "val/ce", "stop": False}]},
}
NOT_ABLATE = {}   # presets with a command of their own instead of ablate (none since greedy_chain.yaml became run/v1)


def test_every_shipped_preset_is_covered():
    assert set(SHIPPED) == set(SHRINK) | set(NOT_ABLATE)


def shrunk_copy(name: str, tmp: Path) -> Path:
    """The preset with one cell, seed 0, the CPU, and the SHRINK sizes."""
    raw = yaml.safe_load((CONFIGS / name).read_text())
    base = raw if raw["schema"] == "run/v1" else raw["baseline" if raw["schema"] == "study/v1" else "base"]
    for k, v in {**SHRINK[name], "device": "cpu", "train.progress": False}.items():
        set_path(base, k, v.format(tmp=tmp) if isinstance(v, str) else v)
    raw["seed" if raw["schema"] == "run/v1" else "seeds"] = 0 if raw["schema"] == "run/v1" else [0]
    if "variants" in raw:
        raw["variants"] = []
    if "grid" in raw:
        raw["grid"] = {k: [base_value(base, k, v)] for k, v in raw["grid"].items()}
    out = tmp / name
    out.write_text(yaml.safe_dump(raw))
    return out


def base_value(base: dict, dotted: str, values: list):
    """The shrunk value of a grid key when SHRINK sets it, else its first level."""
    node = base
    for p in dotted.split("."):
        if not isinstance(node, dict) or p not in node:
            return values[0]
        node = node[p]
    return node


@pytest.mark.parametrize("name", sorted(SHRINK))
def test_shipped_preset_runs_one_trial_through_ablate(tmp_path, name):
    preset = shrunk_copy(name, tmp_path)
    r = subprocess.run([str(BIN / "ablate"), "--config", str(preset), "--out_dir", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    recs = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert [x["state"] for x in recs] == ["COMPLETE"], recs
    summary = json.loads((Path(recs[0]["run_dir"]) / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["steps"] > 0


def test_greedy_chain_preset_runs_with_its_own_command_too(tmp_path):
    """greedy_chain.yaml is a run/v1 config: ablate runs it (above), and so does the study's greedy-train."""
    preset = shrunk_copy("greedy_chain.yaml", tmp_path)
    r = subprocess.run([str(BIN / "greedy-train"), "--config", str(preset), "--out_dir", str(tmp_path / "runs")],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = Path(r.stdout.strip().splitlines()[-1])
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "complete"
    assert (run_dir / "ckpt" / "best.pt").exists() and (run_dir / "params.yaml").exists()
