"""The README cannot drift: every path it names exists, and every command block that names a shipped file runs."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
SHIPPED = re.compile(r"\b(?:ablation_harness/configs/[\w.-]+\.yaml|nbs/experiments/[\w.-]+\.ipynb)")
BLOCKS = [b for b in re.findall(r"```bash\n(.*?)```", README, re.S) if SHIPPED.search(b)]


def test_every_path_the_readme_names_exists():
    paths = set(re.findall(r"`((?:ablation_harness|nbs|book|tests|benchmarks)/[^`\s]*)`", README))
    paths |= set(SHIPPED.findall(README))
    paths = {p for p in paths if "/_build/" not in p}                # built by `make report`, not shipped
    missing = [p for p in sorted(paths) if not list(REPO.glob(p.rstrip("/").replace("NN", "[0-9][0-9]")))]
    assert paths and not missing, missing


def test_the_readme_has_command_blocks_for_the_shipped_presets():
    named = {Path(p).name for b in BLOCKS for p in SHIPPED.findall(b)}
    assert {"ablation_baseline.yaml", "phase_2_batch_sweep.yaml", "factorial.yaml", "greedy_chain.yaml",
            "ablation_baseline.ipynb"} <= named


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_command_block_runs(tmp_path, block):
    """Run the block with bash in a scratch folder where `.venv`, `ablation_harness` and `nbs` are this checkout's."""
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    for name in ("ablation_harness", "nbs"):
        (tmp_path / name).symlink_to(REPO / name)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=1800)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    made = {p.relative_to(tmp_path).as_posix() for p in (tmp_path / "runs").rglob("*")}
    if "plot_scree" in block:
        assert {"runs/writeup_baseline/loss.png", "runs/writeup_baseline/figs/scree_classifier.png"} <= made
    if "papermill" in block:
        assert (tmp_path / "runs" / "smoke" / "headline.json").exists()
    assert not any(name.startswith("runs/batch_scaling/") for name in made)   # --dry-run wrote nothing
