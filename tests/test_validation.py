"""Bad input is refused before any work: one `error:` line, exit code 2, no traceback, nothing under the out dir.

Every case runs a real command (the console scripts next to sys.executable, or `python -m`) in a subprocess,
in its own folder. The commands run concurrently (they are independent) to keep the table fast.
"""
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
RUN = "device: cpu\ndata: {name: digits, n_train: 64, n_val: 32}\nmodel: {name: mlp, width: 8, depth: 1}\ntrain: {epochs: 1, progress: false}\n"
STUDY = "schema: study/v1\nstudy_name: s\nseeds: [0]\nbaseline:\n  device: cpu\n  data: {name: digits, n_train: 64, n_val: 32}\n  model: {name: mlp, width: 8, depth: 1}\n"
SWEEP = "schema: sweep/v1\nstudy_name: s\nseeds: [0]\nbase:\n  device: cpu\n  data: {name: digits, n_train: 64, n_val: 32}\n"


def ablate(text, *extra):
    return ("ablate", ["--config", "p.yaml", "--out_dir", "out", *extra], text)


def train(text):
    return ("ah-train", ["--config", "p.yaml", "--out_dir", "out"], text)


# (id, (command, args, preset text or bytes or None for no file), words the error line must contain)
CASES = [
    # YAML syntax and unsafe tags
    ("yaml-unclosed-flow", ablate("schema: study/v1\nseeds: [0, 1\n"), ["p.yaml", "invalid YAML", "line"]),
    ("yaml-bad-indent", train("data:\n  name: digits\n n_val: 3\n"), ["p.yaml", "invalid YAML"]),
    ("yaml-duplicate-key", ablate(STUDY + "seeds: [1]\n"), ["p.yaml", "duplicate key 'seeds'"]),
    ("yaml-unsafe-apply", ablate("a: !!python/object/apply:os.system ['touch pwned']\n"), ["p.yaml", "python/object/apply"]),
    ("yaml-unsafe-name", train("a: !!python/name:os.system\n"), ["p.yaml", "python/name"]),
    # missing, empty, comment-only, non-UTF-8 files
    ("file-missing", ("ablate", ["--config", "nope.yaml", "--out_dir", "out"], None), ["nope.yaml", "not found"]),
    ("file-empty", ablate(""), ["p.yaml", "empty"]),
    ("file-comment-only", train("# nothing but a comment\n"), ["p.yaml", "empty"]),
    ("file-not-utf8", ablate(b"study_name: \xff\xfe\n"), ["p.yaml", "UTF-8"]),
    # top level not a mapping
    ("top-list", ablate("- 1\n- 2\n"), ["p.yaml", "mapping", "list"]),
    ("top-scalar", train("just a string\n"), ["p.yaml", "mapping", "str"]),
    # unknown keys, also inside variants, grids and overrides
    ("key-top", train(RUN + "bogus: 1\n"), ["p.yaml", "bogus"]),
    ("key-nested", ablate(STUDY + "  optim: {lerning_rate: 0.1}\n"), ["p.yaml", "baseline.optim.lerning_rate"]),
    ("key-preset", ablate(STUDY + "variant: []\n"), ["p.yaml", "variant"]),
    ("key-variant-entry", ablate(STUDY + "variants: [{name: a, override: {optim.lr: 0.1}}]\n"), ["p.yaml", "variants.0.override"]),
    ("key-variant-override", ablate(STUDY + "variants: [{name: a, overrides: {model.nme: 3}}]\n"), ["p.yaml", "variants.0.overrides.model.nme"]),
    ("key-grid", ablate(SWEEP + "grid: {optim.lrr: [0.1, 0.2]}\n"), ["p.yaml", "grid.optim.lrr"]),
    ("key-override-through-leaf", ablate(STUDY + "variants: [{name: a, overrides: {optim.lr.x: 1}}]\n"), ["p.yaml", "optim.lr.x"]),
    ("key-data-option", train(RUN.replace("n_val: 32}", "n_val: 32, options: {tst_fraction: 0.1}}")), ["p.yaml", "tst_fraction"]),
    ("key-callback-argument", ablate(STUDY + "  callbacks: [{name: spectral, topkk: 3}]\n"), ["p.yaml", "callbacks.0", "topkk"]),
    ("key-model-option", ablate(STUDY.replace("{name: mlp, width: 8, depth: 1}", "{name: tiny_transformer, options: {head: 2}}")),
     ["p.yaml", "model.options", "'head'", "heads"]),
    ("key-data-option-sweep", ablate(STUDY.replace("n_val: 32}", "n_val: 32, options: {tst_fraction: 0.1}}")),
     ["p.yaml", "data.options", "tst_fraction", "test_fraction"]),
    # wrong types
    ("type-epochs", train(RUN.replace("epochs: 1", "epochs: two")), ["p.yaml", "train.epochs"]),
    ("type-seeds", ablate(STUDY.replace("seeds: [0]", "seeds: zero")), ["p.yaml", "seeds"]),
    ("type-grid-not-list", ablate(SWEEP + "grid: {optim.lr: 0.1}\n"), ["p.yaml", "grid.optim.lr"]),
    ("type-callback-argument", ablate(STUDY + "  callbacks: [{name: spectral, topk: five}]\n"), ["p.yaml", "callbacks.0.topk"]),
    # non-finite and out-of-range numbers
    ("num-nan-lr", ablate(STUDY + "  optim: {lr: .nan}\n"), ["p.yaml", "optim.lr", "finite"]),
    ("num-inf-lr", train(RUN + "optim: {lr: .inf}\n"), ["p.yaml", "optim.lr", "finite"]),
    ("num-nan-in-callback", ablate(STUDY + "  callbacks: [{name: gradient_noise, scale: .nan}]\n"), ["p.yaml", "callbacks.0.scale", "finite"]),
    ("num-inf-in-grid", ablate(SWEEP + "grid: {optim.lr: [0.1, .inf]}\n"), ["p.yaml", "grid.optim.lr.1", "finite"]),
    ("num-negative-decay", ablate(STUDY + "  optim: {weight_decay: -1}\n"), ["p.yaml", "weight_decay"]),
    ("num-dropout-above-1", train(RUN.replace("depth: 1}", "depth: 1, dropout: 1.5}")), ["p.yaml", "model.dropout"]),
    ("num-negative-seed", ablate(STUDY.replace("seeds: [0]", "seeds: [-1]")), ["p.yaml", "seeds.0"]),
    ("num-zero-schedule", ablate(STUDY + "  callbacks: [{name: spectral, every: 0}]\n"), ["p.yaml", "callbacks.0", "every"]),
    ("num-cli-nan", ("scaling-analysis", ["--results", "r.csv", "--out", "out", "--floor", "nan"], None), ["--floor", "finite"]),
    # unknown names from every registry
    ("name-dataset", ablate(STUDY.replace("name: digits", "name: imagenet")), ["p.yaml", "unknown dataset 'imagenet'"]),
    ("name-model", train(RUN.replace("name: mlp", "name: resnet")), ["p.yaml", "unknown model 'resnet'"]),
    ("name-task", ablate(STUDY + "  task: regression\n"), ["p.yaml", "unknown task 'regression'"]),
    ("name-callback", ablate(STUDY + "  callbacks: [{name: nope}]\n"), ["p.yaml", "unknown callback 'nope'"]),
    ("name-sink", train(RUN + "sinks: {mlflow: true}\n"), ["p.yaml", "unknown sink 'mlflow'"]),
    ("name-executor", ablate(STUDY, "--executor", "dask"), ["--executor", "dask"]),
    ("name-executor-study-cli", ("factorial-train-all", ["--out-dir", "out", "--executor", "dask"], None), ["--executor", "dask"]),
    ("name-dataset-study-cli", ("greedy-train", ["--config", "p.yaml", "--out_dir", "out"], "dataset: imagenet\n"), ["p.yaml", "dataset"]),
    ("name-schema", ablate("schema: sweep/v9\nstudy_name: s\n"), ["p.yaml", "unknown 'sweep/v9'"]),
    # duplicate variant or cell names (and trials that would be the same run)
    ("dup-variant", ablate(STUDY + "variants: [{name: a, overrides: {optim.lr: 0.1}}, {name: a, overrides: {optim.lr: 0.2}}]\n"), ["p.yaml", "duplicate variant name 'a'"]),
    ("dup-variant-baseline", ablate(STUDY + "variants: [{name: baseline, overrides: {optim.lr: 0.1}}]\n"), ["p.yaml", "'baseline'"]),
    ("dup-grid-value", ablate(SWEEP + "grid: {optim.lr: [0.1, 0.1]}\n"), ["p.yaml", "grid.optim.lr", "twice"]),
    ("dup-seed", ablate(STUDY.replace("seeds: [0]", "seeds: [0, 0]")), ["p.yaml", "seed 0"]),
    ("dup-same-run", ablate(STUDY + "variants: [{name: a, overrides: {optim.lr: 0.1}}, {name: b, overrides: {optim.lr: 0.1}}]\n"), ["p.yaml", "variant a", "variant b"]),
    ("dup-cell-name", ablate(SWEEP + "grid: {model.options.k: [1, 2], data.options.k: [3]}\n"), ["p.yaml", "'k'"]),
    # the study CLIs and the report
    ("study-cli-preset-nan", ("factorial-train-all", ["--out-dir", "out", "--preset", "p.yaml"],
                              "schema: sweep/v1\nstudy_name: f\nbase: {optim: {lr: .nan}}\ngrid: {model.channels: [4], model.hidden: [4]}\n"),
     ["p.yaml", "finite"]),
    ("study-cli-not-utf8", ("greedy-train", ["--config", "p.yaml", "--out_dir", "out"], b"N: \xff\n"), ["p.yaml", "UTF-8"]),
    ("study-cli-bad-results", ("scaling-analysis", ["--results", "p.yaml", "--out", "out"], "a,b\n1,2\n"), ["--results", "missing columns"]),
    ("ablate-greedy-preset", ablate("schema: greedy_chain/v1\nN: 8\n"), ["p.yaml", "greedy-train"]),
    ("report-profile", ("report", ["--profile", "huge"], None), ["--profile", "huge"]),
    ("report-executor", ("report", ["--executor", "dask"], None), ["--executor", "dask"]),
]


def run_case(tmp: Path, case) -> subprocess.CompletedProcess:
    """Write the preset into a fresh folder and run the command there."""
    name, (command, args, text), _ = case
    work = tmp / name
    work.mkdir()
    if text is not None:
        target = work / ("p.yaml" if "p.yaml" in args else "r.csv")
        target.write_bytes(text if isinstance(text, bytes) else text.encode())
    return subprocess.run([str(BIN / command), *args], cwd=work, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every case run once, four at a time."""
    tmp = tmp_path_factory.mktemp("bad")
    with ThreadPoolExecutor(4) as pool:
        done = dict(zip((c[0] for c in CASES), pool.map(lambda c: run_case(tmp, c), CASES)))
    return tmp, done


def test_the_table_covers_every_class():
    classes = {c[0].split("-")[0] for c in CASES}
    assert len(CASES) >= 25 and {"yaml", "file", "top", "key", "type", "num", "name", "dup"} <= classes


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_in_one_line(results, case):
    tmp, done = results
    name, _, words = case
    r = done[name]
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not (tmp / name / "out").exists()
    assert not (tmp / name / "pwned").exists()
