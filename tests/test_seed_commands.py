"""Seed 002's plotting commands, run exactly as the seed writes them, on a smoke run."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ablation_harness.core import read_jsonl


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A one-epoch TinyCNN run on 256 MNIST images with the spectral callback (the seed's baseline, offline)."""
    tmp = tmp_path_factory.mktemp("seed002")
    cfg = {"study": "writeup_baseline", "device": "cpu", "data": {"name": "mnist", "n_train": 256, "n_val": 128},
           "model": {"name": "tinycnn"}, "train": {"epochs": 1, "batch_size": 32, "progress": False},
           "callbacks": [{"name": "spectral", "topk": 5}]}
    (tmp / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run([str(Path(sys.executable).parent / "ah-train"), "--config", "c.yaml", "--out_dir", "runs"],
                       cwd=tmp, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return tmp, r.stdout.strip().splitlines()[-1]


def seed(command: str, cwd) -> subprocess.CompletedProcess:
    """Run one of the seed's `python -m ...` command lines with this interpreter."""
    argv = command.split()
    assert argv[:2] == ["python", "-m"]
    return subprocess.run([sys.executable, *argv[1:]], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_plot_loss_as_the_seed_writes_it(smoke_run):
    tmp, run = smoke_run
    r = seed(f"python -m ablation_harness.plot_loss {run}/metrics.jsonl --metrics train/loss --out runs/writeup_baseline/loss", tmp)
    assert r.returncode == 0, r.stderr
    png, csv = tmp / "runs/writeup_baseline/loss.png", tmp / "runs/writeup_baseline/loss.csv"
    assert png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    drawn = pd.read_csv(csv)
    logged = [x for x in read_jsonl(tmp / run / "metrics.jsonl") if x["metric"] == "loss" and x["split"] == "train"]
    assert set(drawn["metric"]) == {"train/loss"}
    assert drawn["step"].tolist() == [x["step"] for x in logged] and len(logged) == 8
    assert np.allclose(drawn["value"], [x["value"] for x in logged])


def test_plot_scree_as_the_seed_writes_it(smoke_run):
    tmp, run = smoke_run
    r = seed(f"python -m ablation_harness.plot_scree {run}/spectral_final.json --layer classifier "
             "--out runs/writeup_baseline/figs/scree_classifier --logy --normalize", tmp)
    assert r.returncode == 0, r.stderr
    out = tmp / "runs/writeup_baseline/figs"
    assert (out / "scree_classifier.png").stat().st_size > 5000
    drawn = pd.read_csv(out / "scree_classifier.csv")
    sv = json.loads((tmp / run / "spectral_final.json").read_text())["layers"]["classifier"]["singular_values"]
    assert len(sv) == 10 and set(drawn["layer"]) == {"classifier"}       # Linear(32, 10): ten singular values
    assert np.allclose(drawn["sigma"], sv) and np.allclose(drawn["sigma_over_sigma1"], np.array(sv) / sv[0])


def test_unknown_layer_is_one_line_and_exit_2(smoke_run):
    tmp, run = smoke_run
    r = seed(f"python -m ablation_harness.plot_scree {run}/spectral_final.json --layer nope --out x", tmp)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "classifier" in r.stderr and not (tmp / "x.png").exists()
