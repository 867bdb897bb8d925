"""`ablate --set KEY=VALUE` overrides a dotted key of the preset file, and a bad override is refused before any work."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

PRESET = Path(__file__).resolve().parents[1] / "ablation_harness" / "configs" / "ablation_baseline.yaml"


def ablate(*args):
    return subprocess.run([sys.executable, "-m", "ablation_harness.ablate", "--config", str(PRESET), *args],
                          capture_output=True, text=True)


def test_set_overrides_reach_every_trial(tmp_path):
    r = ablate("--out_dir", str(tmp_path / "o"), "--seed", "0", "--set", "baseline.data.n_train=128",
               "--set", "baseline.data.n_val=64", "--set", "baseline.train.epochs=1", "--set", "baseline.data.name=digits")
    assert r.returncode == 0, r.stderr
    cfgs = sorted((tmp_path / "o").rglob("config.yaml"))
    assert len(cfgs) == 3
    recs = [json.loads(l) for l in (tmp_path / "o" / "results.jsonl").read_text().splitlines()]
    assert {x["state"] for x in recs} == {"COMPLETE"} and {x["dataset"] for x in recs} == {"digits"}


@pytest.mark.parametrize("item, field", [("baseline.data.n_train=-5", "n_train"), ("baseline.nope=1", "nope"),
                                         ("novalue", "KEY=VALUE"), ("baseline.train.epochs=[1", "epochs")])
def test_bad_set_is_refused_in_one_line(tmp_path, item, field):
    r = ablate("--out_dir", str(tmp_path / "o"), "--set", item)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and field in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()
