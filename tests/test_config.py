"""config: strict schemas, one-line errors naming file and field, stable hash."""
import subprocess
import sys

import pytest

from ablation_harness.config import (ConfigError, RunConfig, StudyPreset, SweepPreset, config_hash, load_config,
                                     trial_configs)


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,field", [
    ("optim:\n  lr: -0.1\n", "optim.lr"),
    ("optim:\n  lerning_rate: 0.1\n", "optim.lerning_rate"),
    ("train:\n  epochs: many\n", "train.epochs"),
    ("data:\n  name: imagenet\n", "data.name"),
    ("model:\n  name: resnet9000\n", "model.name"),
    ("device: tpu\n", "device"),
])
def test_bad_values_name_file_and_field(tmp_path, text, field):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and f": {field}:" in msg and "\n" not in msg


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(write(tmp_path, "a: [1, 2\n"))


def test_yaml_uses_safe_load(tmp_path):
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, "seed: !!python/object/apply:os.system ['echo hi']\n"))


def test_hash_stable_across_processes_and_key_order():
    code = ("from ablation_harness.config import RunConfig, config_hash;"
            "print(config_hash(RunConfig.model_validate({'optim': {'lr': 0.01}, 'seed': 2})))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == config_hash(RunConfig.model_validate({"seed": 2, "optim": {"lr": 0.01}}))
    assert other != config_hash(RunConfig.model_validate({"seed": 2, "optim": {"lr": 0.02}}))
    # fields that do not change results do not change the hash
    assert other == config_hash(RunConfig.model_validate({"seed": 2, "optim": {"lr": 0.01}, "out_dir": "elsewhere"}))


def test_presets_expand_and_validate_every_trial():
    sweep = SweepPreset.model_validate({"study_name": "s", "grid": {"optim.lr": [0.1, 0.01], "model.width": [8, 16]}, "seeds": [0, 1]})
    trials = trial_configs(sweep)
    assert len(trials) == 8
    assert {(c.optim.lr, c.model.width, c.seed) for _, c in trials} == {(a, b, s) for a in (0.1, 0.01) for b in (8, 16) for s in (0, 1)}
    study = StudyPreset.model_validate({"study_name": "s", "baseline": {"optim": {"lr": 0.1}},
                                        "variants": [{"name": "small", "overrides": {"optim.lr": -1}}]})
    with pytest.raises(ConfigError, match="optim.lr"):
        trial_configs(study)


def test_defaults_are_valid():
    assert RunConfig().optim.lr > 0
