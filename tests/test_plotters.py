"""plot_loss / plot_scree: the drawn data equals an independent computation; CLI files and exit codes."""
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from ablation_harness.cli import plot_loss_cli, plot_scree_cli
from ablation_harness.plots import plot_scree
from ablation_harness.runs import load_spectral


def spectral_file(path, sv):
    path.write_text(json.dumps({"step": 2, "epoch": 1, "layers": {
        "conv1": {"singular_values": list(sv), "spectral_norm": sv[0]}, "classifier": {"singular_values": [3.0, 1.0]}}}))
    return path


def test_scree_normalized_starts_at_one_and_is_the_ratio(tmp_path):
    a = spectral_file(tmp_path / "a.json", [4.0, 2.0, 1.0])
    b = spectral_file(tmp_path / "b.json", [10.0, 1.0, 0.1])
    fig = plot_scree(load_spectral([a, b]), layer="conv1", normalize=True, logy=True)
    ys = [l.get_ydata() for l in fig.axes[0].get_lines()]
    assert np.allclose(ys[0], [1, 0.5, 0.25]) and np.allclose(ys[1], [1, 0.1, 0.01])
    assert fig.axes[0].get_yscale() == "log"
    plt.close(fig)


def test_plot_scree_cli_writes_format_by_extension(tmp_path, capsys):
    a = spectral_file(tmp_path / "a.json", [4.0, 2.0, 1.0])
    assert plot_scree_cli([str(a), "--layer", "classifier", "--out", str(tmp_path / "s.svg")]) == 0
    assert (tmp_path / "s.svg").read_text().lstrip().startswith("<?xml")
    assert pd.read_csv(tmp_path / "s.csv")["sigma"].tolist() == [3.0, 1.0]
    assert plot_scree_cli([str(a), "--layer", "nope", "--out", str(tmp_path / "x.png")]) == 2
    assert "nope" in capsys.readouterr().err


def test_plot_loss_reads_wide_jsonl_and_smooths(tmp_path):
    rows = [{"step": i, "train/loss": 2.0 / (i + 1), "val/loss": 1.0 + 0.1 * i} for i in range(10)]
    f = tmp_path / "loss.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "loss.png"
    assert plot_loss_cli([str(f), "--metrics", "train/loss", "--ema", "0.5", "--out", str(out)]) == 0
    drawn = pd.read_csv(tmp_path / "loss.csv")
    assert drawn["value"].tolist() == pytest.approx([r["train/loss"] for r in rows])
    assert out.stat().st_size > 5000


def test_plot_loss_errors(tmp_path, capsys):
    f = tmp_path / "m.csv"
    pd.DataFrame({"step": [1, 2], "acc": [0.1, 0.2]}).to_csv(f, index=False)
    assert plot_loss_cli([str(f), "--out", str(tmp_path / "o.png")]) == 2
    assert "loss" in capsys.readouterr().err
    assert plot_loss_cli([str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o.png")]) == 2
    assert not (tmp_path / "o.png").exists()
