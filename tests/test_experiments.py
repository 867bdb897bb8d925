"""Every experiment notebook runs under papermill at the smoke profile and writes its figures."""
import json
from pathlib import Path

import papermill as pm
import pytest

EXPERIMENTS = sorted(Path(__file__).resolve().parents[1].joinpath("nbs", "experiments").glob("*.ipynb"))


@pytest.mark.parametrize("nb", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_smoke(tmp_path, nb):
    params = pm.inspect_notebook(str(nb))
    assert {"profile", "out_dir"} <= set(params), "every experiment takes profile and out_dir"
    out = tmp_path / "out"
    pm.execute_notebook(str(nb), str(tmp_path / nb.name), parameters={"profile": "smoke", "out_dir": str(out)},
                        cwd=str(tmp_path), progress_bar=False, kernel_name="python3")
    pngs = list(out.rglob("*.png"))
    assert pngs and all(p.stat().st_size > 5000 for p in pngs)
    assert json.loads((out / "headline.json").read_text())
