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
from pathlib import Path
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Image, Markdown, display
from ablation_harness.core import progress_bar
from ablation_harness.stats import claim, write_headline

out = Path(out_dir)
(out / "figures").mkdir(parents=True, exist_ok=True)
fig, ax = plt.subplots(figsize=(4, 3))
ax.plot([0, 1, 2], [0, scale, 2 * scale])
ax.set(title="A line", xlabel="x", ylabel="y")
fig.savefig(out / "figures" / "line.png", dpi=60)
for _ in progress_bar(range(3), desc="trials"):   # a sweep's bar: forwarded to the report's terminal
    pass
claims = [claim("slope", "The line rises with the given slope.", scale, [scale - 0.5, scale + 0.5], 3, "resolved"),
          claim("offset", "The offset is within the noise.", 0.01, [-0.02, 0.04], 3, "unresolved"),
          claim("third", "A third claim, shown in the summary only.", 2.0, [1.0, 3.0], 3, "resolved")]
context = {"profile": profile, "seeds": [0, 1, 2], "wall_time_s": 1.0, "converged": True,
           "convergence_criterion": "stats.plateaued on the loss", "key_figure": "figures/line.png"}
write_headline(out / "headline.json", "fine", context, claims)
print(f"figures written to {out / 'figures'}")
display(pd.DataFrame({"mean": [0.123456789, 12.3456789]}))
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
    """`fine`: a figure, a formula, a table, a progress bar and claims; `broken` (no kernelspec): raises in its
    second cell."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    write_study(exp_dir, "fine", [new_markdown_cell(f"# Fine study\n\n{FORMULA}"), params_cell("scale = 1.0  # slope of the line"),
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
    """One small module notebook for the book's API part: an example with an output, a cell nbdev_test skips."""
    nbs_dir.mkdir(parents=True, exist_ok=True)
    nb = new_notebook(cells=[new_markdown_cell("# demo module\n\n> A formula in the API part: $a^2+b^2=c^2$."),
                             new_code_cell("#| default_exp demo"),
                             new_code_cell("#| export\ndef f(x):\n    \"\"\"Double x.\"\"\"\n    return 2 * x"),
                             new_code_cell("print(f'f(21) = {f(21)}')"),
                             new_code_cell("#| eval: false\nraise RuntimeError('nbdev_test skips this cell')")])
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
