"""Every shipped preset runs through the real `ablate` command, two grid cells (or the baseline and a variant) deep.

For each `ablation_harness/configs/*.yaml` a copy is written to a temporary folder with its sizes shrunk (tiny data,
one epoch or a few steps, one seed, at most two cells), and `ablate --config COPY --out_dir OUT` runs in a fresh
process (the console script, as a user types it). The command must exit 0 and every record of OUT/results.jsonl
must be COMPLETE: the names a preset uses resolve from the registries alone, whatever the preset's study.
"""
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

TINY = {"device": "cpu", "train.progress": False, "data.n_train": 64, "data.n_val": 32, "data.n_test": 32, "train.epochs": 1}
EXTRA = {   # what a preset needs beyond TINY to take seconds (its own data options, schedules and widths)
    "factorial.yaml": {"data.n_train": None, "data.n_val": None, "data.n_test": None, "checkpoint.every": 1,
                       "data.root": "{tmp}/cache", "model.channels": 4, "model.hidden": 4,
                       "data.options": {"n_games": 12, "game_seed": 0, "depth": 1, "temperature": 5.0, "mirror": True}},
    "phase_2_batch_sweep.yaml": {"train.max_steps": 4,
                                 "callbacks": [{"name": "batch_scaling_log", "log_every": 2, "val_points": 2}]},
    "greedy_chain.yaml": {"model.width": 16, "train.analysis_batch_size": 16,
                          "callbacks": [{"name": "chain_metrics", "every": 4, "samples": 16},
                                        {"name": "plateau_stop", "window": 5, "rel_tol": 0.01, "monitor": "val/ce"}]},
}


def set_path(d: dict, dotted: str, value) -> None:
    """Set (or, for None, remove) `a.b.c` in nested dicts in place."""
    *parents, leaf = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    if value is None:
        d.pop(leaf, None)
    else:
        d[leaf] = value


def shrunk(name: str, tmp: Path) -> tuple[Path, int]:
    """A tiny copy of a preset and the number of trials it has (one seed, at most two cells)."""
    raw = yaml.safe_load((CONFIGS / name).read_text())
    schema = raw.get("schema", "run/v1")
    base = raw if schema == "run/v1" else raw["baseline" if schema == "study/v1" else "base"]
    for k, v in {**TINY, **EXTRA.get(name, {})}.items():
        set_path(base, k, v.format(tmp=tmp) if isinstance(v, str) else v)
    cells = 1
    if schema == "run/v1":
        raw["seed"] = 0
    else:
        raw["seeds"] = [0]
    if raw.get("variants"):
        raw["variants"], cells = raw["variants"][:1], 2
    if raw.get("grid"):
        keys = list(raw["grid"])
        raw["grid"] = {k: v[:2] if k == keys[0] else v[:1] for k, v in raw["grid"].items()}
        cells = len(raw["grid"][keys[0]])
    out = tmp / name
    out.write_text(yaml.safe_dump(raw))
    return out, cells


def test_there_are_presets_to_run():
    assert "greedy_chain.yaml" in SHIPPED and len(SHIPPED) >= 4


@pytest.mark.parametrize("name", SHIPPED)
def test_preset_runs_through_ablate_and_every_trial_completes(tmp_path, name):
    preset, cells = shrunk(name, tmp_path)
    r = subprocess.run([str(BIN / "ablate"), "--config", str(preset), "--out_dir", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    records = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert len(records) == cells and all(rec["state"] == "COMPLETE" for rec in records), records
