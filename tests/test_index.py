"""The notebook index (nbs/00_index.ipynb) names only public things that exist, each in one row, and lists every
public function and class of the metric modules and of `stats`."""
import importlib
import json
import pkgutil
import re
from collections import Counter
from pathlib import Path

import pytest

import ablation_harness.metrics

ROOT = Path(__file__).resolve().parents[1]
INDEX = ROOT / "nbs" / "00_index.ipynb"
METRIC_MODULES = ("activations", "representation", "spectral", "trajectory", "gradients", "classification", "callbacks",
                  "noise", "invariance")
INDEXED_MODULES = tuple(f"metrics.{m}" for m in METRIC_MODULES) + ("stats",)


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


def listed_names() -> list[str]:
    """Every name in the function column, once per row it appears in."""
    return [n for r in ROWS for n in re.findall(r"`([\w.]+)`", r[1])]


def public_callables(mod) -> set[str]:
    """The functions and classes in a module's `__all__` (not constants, not `typing` aliases such as `Literal`)."""
    return {n for n in mod.__all__ if callable(obj := getattr(mod, n)) and getattr(obj, "__module__", None) != "typing"}


def test_metric_modules_are_all_the_modules_of_the_metrics_package():
    found = {m.name for m in pkgutil.iter_modules(ablation_harness.metrics.__path__) if not m.name.startswith("_")}
    assert found == set(METRIC_MODULES), f"update METRIC_MODULES: {sorted(found ^ set(METRIC_MODULES))}"


@pytest.mark.parametrize("module", INDEXED_MODULES)
def test_every_public_function_and_class_is_indexed(module):
    mod = importlib.import_module(f"ablation_harness.{module}")
    public = {f"{module}.{n}" for n in public_callables(mod)}
    missing = public - set(listed_names())
    assert not missing, f"not in nbs/00_index.ipynb: {sorted(missing)}"


def test_no_name_is_listed_in_two_rows():
    twice = [n for n, k in Counter(listed_names()).items() if k > 1]
    assert not twice, f"listed in more than one row of nbs/00_index.ipynb: {twice}"


@pytest.mark.parametrize("name", sorted(set(listed_names())))
def test_every_listed_name_is_public(name):
    module, _ = resolve(name)
    first = name[len(module) + 1:].split(".")[0]
    assert first in importlib.import_module(f"ablation_harness.{module}").__all__, f"{name} is not in {module}.__all__"
