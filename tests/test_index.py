"""The notebook index (nbs/00_index.ipynb) names only things that exist, and lists every public metric."""
import importlib
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INDEX = ROOT / "nbs" / "00_index.ipynb"
METRIC_MODULES = ("activations", "representation", "spectral", "trajectory", "gradients", "classification")


def table_rows() -> list[list[str]]:
    """The body rows (5 cells each) of every markdown table in the index."""
    cells = json.loads(INDEX.read_text())["cells"]
    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]
    return [r for r in rows if r[0] != "What it measures"]


ROWS = table_rows()


def resolve(dotted: str):
    """`module.attr[.attr]` under ablation_harness: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module("ablation_harness." + ".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return ".".join(parts[:i]), obj
    raise LookupError(dotted)


def test_the_index_has_rows_of_five_cells():
    assert len(ROWS) >= 30
    assert all(len(r) == 5 for r in ROWS), [r for r in ROWS if len(r) != 5]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r[1][:60])
def test_every_name_in_a_row_exists(row):
    _, funcs, notebook, test, figure = row
    names = re.findall(r"`([\w.]+)`", funcs)
    assert names, row
    stems = re.findall(r"\]\(([\w.]+)\.ipynb\)", notebook)
    assert len(stems) == 1 and (ROOT / "nbs" / f"{stems[0]}.ipynb").exists(), notebook
    exported = re.search(r"default_exp ([\w.]+)", (ROOT / "nbs" / f"{stems[0]}.ipynb").read_text()).group(1)
    for name in names:
        module, _ = resolve(name)
        assert module == exported, f"{name} is not exported by {stems[0]}.ipynb ({exported})"
    path, test_name = re.fullmatch(r"\[`(tests/[\w.]+\.py)`\]\(\.\./\1\)`::(\w+)`", test).groups()
    assert re.search(rf"^def {test_name}\(", (ROOT / path).read_text(), re.M), f"{path}::{test_name}"
    if figure != "—":
        plots, chapter = figure.split(" · ")
        sources = "\n".join(p.read_text() for p in (ROOT / "ablation_harness").rglob("*.py"))
        for fn in re.findall(r"`(\w+)`", plots):
            assert re.search(rf"^def {fn}\(", sources, re.M), f"no plot function {fn}"
        stem = re.fullmatch(r"\[(\w+)\]\(experiments/\1\.ipynb\)", chapter).group(1)
        assert (ROOT / "nbs" / "experiments" / f"{stem}.ipynb").exists(), chapter


def test_every_public_metric_is_indexed():
    listed = {n for r in ROWS for n in re.findall(r"`([\w.]+)`", r[1])}
    for m in METRIC_MODULES:
        mod = importlib.import_module(f"ablation_harness.metrics.{m}")
        public = {f"metrics.{m}.{n}" for n in mod.__all__ if callable(getattr(mod, n))}
        assert not public - listed, f"not in nbs/00_index.ipynb: {sorted(public - listed)}"
