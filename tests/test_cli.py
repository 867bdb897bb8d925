"""CLI: exit codes and files."""
import subprocess
import sys

import pytest
import yaml


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-c", "import sys; from ablation_harness.cli import train_main; train_main()", *args],
                          capture_output=True, text=True, cwd=cwd)


def test_train_cli_writes_a_run(tmp_path):
    cfg = {"study": "cli", "device": "cpu", "data": {"name": "digits", "n_train": 200, "n_val": 100},
           "model": {"name": "mlp", "width": 16, "depth": 1}, "train": {"epochs": 1, "progress": False}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = cli("--config", "c.yaml", "--out_dir", "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run_dir = tmp_path / r.stdout.strip().splitlines()[-1]
    assert (run_dir / "summary.json").exists() and run_dir.parent == tmp_path / "out" / "cli"


@pytest.mark.parametrize("text,needle", [
    ("optim: {lr: -1}\n", "optim.lr"),
    ("bogus: 1\n", "bogus"),
    ("data: {name: cifar10}\n", "data.download"),
    ("train: {epochs: two}\n", "train.epochs"),
    ("callbacks: [{name: nope}]\n", "callbacks.0.name"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, monkeypatch, capsys, text, needle):
    from ablation_harness.cli import train_cli
    (tmp_path / "c.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    assert train_cli(["--config", "c.yaml", "--out_dir", "out"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]
    assert not (tmp_path / "out").exists()


def test_missing_config_file_exits_2_from_the_console_script(tmp_path):
    r = cli("--config", "missing.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "missing.yaml" in r.stderr and not list(tmp_path.iterdir())
