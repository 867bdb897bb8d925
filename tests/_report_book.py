"""Shared by test_report.py and test_book_browser.py: two tiny studies, a tmp copy of book/, one report run.

The first test module that asks builds the sample book once per pytest session (in the session's base temp
folder); the other reuses it.
"""
import shutil
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from ablation_harness import report

REPO = Path(__file__).resolve().parents[1]
# \boldsymbol is not in tex-mml-chtml.js: MathJax autoloads it from input/tex/extensions/, which must be shipped
FORMULA = "Euler: $e^{i\\pi}+1=0$, and\n\n$$\n\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2},\\quad \\boldsymbol{w}.\n$$\n"

FINE_CODE = """\
import json
from pathlib import Path
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from IPython.display import Image, Markdown, display

out = Path(out_dir)
(out / "figures").mkdir(parents=True, exist_ok=True)
fig, ax = plt.subplots(figsize=(4, 3))
ax.plot([0, 1, 2], [0, scale, 2 * scale])
fig.savefig(out / "figures" / "line.png", dpi=60)
(out / "headline.json").write_text(json.dumps({"slope": float(scale), "seed": 7, "profile": profile}))
display(Image(filename=str(out / "figures" / "line.png")))
display(Markdown(f"The slope is $\\\\hat\\\\beta = {scale:.1f}$."))
"""


def write_study(exp_dir: Path, name: str, cells: list, kernelspec: bool = True) -> Path:
    """Write an experiment notebook into exp_dir, with a python3 kernelspec or (as jupytext may) none."""
    meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}} if kernelspec else {}
    nb = new_notebook(cells=cells, metadata=meta)
    path = Path(exp_dir) / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def params_cell(extra: str = "") -> nbformat.NotebookNode:
    """A papermill parameters cell declaring profile and out_dir."""
    return new_code_cell(f'profile = "report"\nout_dir = "."\n{extra}', metadata={"tags": ["parameters"]})


def write_sample_studies(exp_dir: Path) -> None:
    """`fine`: a figure, a formula and headline.json; `broken` (no kernelspec): raises in its second cell."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    write_study(exp_dir, "fine", [new_markdown_cell(f"# Fine study\n\n{FORMULA}"), params_cell("scale = 1.0"),
                                  new_code_cell(FINE_CODE)])
    write_study(exp_dir, "broken", [new_markdown_cell("# Broken study"), params_cell(),
                                    new_code_cell('raise RuntimeError("deliberate failure")')], kernelspec=False)


def copy_book_skeleton(dest: Path) -> Path:
    """Copy the committed parts of book/ (config, template, MathJax) to dest."""
    src = REPO / "book"
    dest.mkdir(parents=True)
    shutil.copy(src / "_config.yml", dest / "_config.yml")
    for sub in ("templates", "mathjax_extra"):
        shutil.copytree(src / sub, dest / sub)
    return dest


def write_module_notebook(nbs_dir: Path) -> None:
    """One small module notebook for the book's API part."""
    nbs_dir.mkdir(parents=True, exist_ok=True)
    nb = new_notebook(cells=[new_markdown_cell("# demo module\n\n> A formula in the API part: $a^2+b^2=c^2$."),
                             new_code_cell("#| export\ndef f(x):\n    \"\"\"Double x.\"\"\"\n    return 2 * x")])
    nbformat.write(nb, nbs_dir / "00_demo.ipynb")


def sample_report(tmp_path_factory) -> dict:
    """Run the sample report (profile smoke) once per session; return its folders and exit code."""
    root = tmp_path_factory.getbasetemp() / "sample_report"
    # `where` holds the study inputs; a stand-in package keeps the cache key independent of edits to the real one
    where = {"exp_dir": root / "experiments", "package_dir": root / "pkg", "data_dir": root / "pkg" / "data"}
    info = {"root": root, "where": where, "exp_dir": where["exp_dir"], "out_root": root / "runs",
            "book_dir": root / "book", "nbs_dir": root / "nbs"}
    done = root / "exit_code"
    if not done.exists():
        write_sample_studies(info["exp_dir"])
        write_module_notebook(info["nbs_dir"])
        copy_book_skeleton(info["book_dir"])
        where["data_dir"].mkdir(parents=True)
        (where["package_dir"] / "mod.py").write_text("X = 1\n")
        (where["data_dir"] / "d.txt").write_text("data\n")
        code = report.make_report("smoke", out_root=info["out_root"], book_dir=info["book_dir"],
                                  nbs_dir=info["nbs_dir"], **where)
        done.write_text(str(code))
    info["exit_code"] = int(done.read_text())
    return info
