"""The report step end to end at the smoke profile, on two tiny studies written here (one fine, one failing)."""
import json
import sys
from pathlib import Path

import nbformat
import pytest

from ablation_harness import report

sys.path.insert(0, str(Path(__file__).parent))
from _report_book import params_cell, sample_report, write_study  # noqa: E402


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The sample report, run (and its book built) once per session."""
    return sample_report(tmp_path_factory)


def test_failed_study_is_reported_and_the_rest_is_built(sample):
    """The broken study fails with its executed notebook kept; the fine one is in the built book."""
    assert sample["exit_code"] == 1
    runs = sample["out_root"] / "smoke"
    broken = nbformat.read(runs / "broken" / "broken.ipynb", as_version=4)
    outputs = [o for c in broken.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.output_type == "error"]
    assert [(e.ename, e.evalue) for e in errors] == [("RuntimeError", "deliberate failure")]
    assert json.loads((runs / "broken" / report.MANIFEST).read_text())["state"] == "failed"
    assert json.loads((runs / "fine" / "headline.json").read_text()) == {"slope": 1.0, "seed": 7, "profile": "smoke"}
    html = sample["book_dir"] / "_build" / "html"
    for page in ("index.html", "intro.html", "summary.html", "provenance.html", "chapters/fine.html",
                 "chapters/broken.html", "api/00_demo.html"):
        assert (html / page).exists(), page
    intro = (sample["book_dir"] / "intro.md").read_text()
    assert intro.index("1 of 2 studies failed") < intro.index("## Studies")
    assert "report --only fine --profile smoke" in intro and "figures/line.png" in intro
    summary = (sample["book_dir"] / "summary.md").read_text()
    assert "| slope | 1 |" in summary and "No headline numbers (failed)" in summary
    assert list((html / "_images").glob("*.png")), "the fine study's figure is not in the book"
    assert (html / "mathjax" / "tex-mml-chtml.js").exists()


def test_second_run_is_a_cache_hit(sample, capsys):
    """A no-change report re-executes nothing that succeeded; the failed study is retried."""
    fine_nb = sample["out_root"] / "smoke" / "fine" / "fine.ipynb"
    before = fine_nb.stat().st_mtime_ns
    code = report.make_report("smoke", out_root=sample["out_root"], book_dir=sample["book_dir"],
                              nbs_dir=sample["nbs_dir"], **sample["where"])
    out = capsys.readouterr().out
    assert code == 1
    assert "fine: cached" in out and "broken: failed" in out
    assert fine_nb.stat().st_mtime_ns == before
    r = report.run_study("fine", "smoke", sample["out_root"], **sample["where"])
    assert (r.state, r.cache_hit, r.executed_nb) == ("cached", True, fine_nb)
    assert fine_nb.stat().st_mtime_ns == before


def test_parameter_change_is_a_cache_miss(sample, tmp_path):
    """Another value of a parameter re-executes the study, and the new value reaches the notebook."""
    kw = sample["where"]
    first = report.run_study("fine", "smoke", tmp_path, **kw)
    again = report.run_study("fine", "smoke", tmp_path, **kw)
    changed = report.run_study("fine", "smoke", tmp_path, extra_params={"scale": 3.0}, **kw)
    assert (first.state, again.state, changed.state) == ("ok", "cached", "ok")
    assert len({first.key, changed.key}) == 2 and first.key == again.key
    assert json.loads((changed.out_dir / "headline.json").read_text())["slope"] == 3.0
    forced = report.run_study("fine", "smoke", tmp_path, force=True, extra_params={"scale": 3.0}, **kw)
    assert forced.state == "ok"


def test_unknown_parameter_is_an_error_naming_it(sample, tmp_path):
    """A parameter the notebook does not declare is refused before anything runs."""
    with pytest.raises(report.UnknownParameterError, match="learning_rate"):
        report.run_study("fine", "smoke", tmp_path, extra_params={"learning_rate": 0.1}, exp_dir=sample["exp_dir"])
    assert not any(tmp_path.rglob("*.ipynb"))
    write_study(tmp_path, "untagged", [nbformat.v4.new_code_cell('profile = "report"\nout_dir = "."')])
    with pytest.raises(report.UnknownParameterError, match="out_dir, profile"):
        report.run_study("untagged", "smoke", tmp_path / "runs", exp_dir=tmp_path)


def test_make_report_refuses_unknown_study(sample, capsys):
    """An unknown --only name is bad input: exit code 2 and the available names."""
    code = report.make_report("smoke", only="nope", exp_dir=sample["exp_dir"], out_root=sample["out_root"],
                              book_dir=sample["book_dir"], nbs_dir=sample["nbs_dir"])
    assert code == 2 and "available: broken, fine" in capsys.readouterr().err


def test_study_hash_tracks_its_inputs(tmp_path):
    """The key ignores outputs and non-code files, and changes with the cells, a package file, a parameter or data."""
    exp, pkg, data = tmp_path / "exp", tmp_path / "pkg", tmp_path / "data"
    for d in (exp, pkg / "sub", data):
        d.mkdir(parents=True)
    nb = write_study(exp, "s", [params_cell()])
    (pkg / "sub" / "m.py").write_text("x = 1\n")
    (pkg / "notes.txt").write_text("not code")
    (data / "d.bin").write_bytes(b"\x00\x01")
    params = {"profile": "smoke", "out_dir": "o"}
    key = report.study_hash(nb, params, pkg, data)
    assert report.study_hash(nb, dict(reversed(params.items())), pkg, data) == key
    (pkg / "notes.txt").write_text("still not code")
    executed = nbformat.read(nb, as_version=4)   # outputs and metadata, as after a run in JupyterLab, do not count
    executed.cells[0].outputs = [nbformat.v4.new_output("stream", text="hello")]
    executed.metadata["language_info"] = {"name": "python"}
    nbformat.write(executed, nb)
    assert report.study_hash(nb, params, pkg, data) == key
    changes = [lambda: (pkg / "sub" / "m.py").write_text("x = 2\n"),
               lambda: (data / "d.bin").write_bytes(b"\x00\x02"),
               lambda: write_study(exp, "s", [params_cell("extra = 1")])]
    keys = {key}
    for change in changes:
        change()
        keys.add(report.study_hash(nb, params, pkg, data))
    keys.add(report.study_hash(nb, {**params, "profile": "full"}, pkg, data))
    assert len(keys) == 5


def test_declared_parameters_match_papermill(sample):
    """Our reading of the parameters cell agrees with papermill.inspect_notebook."""
    import papermill
    nb = sample["exp_dir"] / "fine.ipynb"
    expected = list(papermill.inspect_notebook(str(nb)))
    assert report.declared_parameters(nb) == expected == ["profile", "out_dir", "scale"]


def test_discover_studies_skips_private_and_checkpoints(tmp_path):
    """Only visible notebooks are studies."""
    for name in ("b", "a", "_draft"):
        write_study(tmp_path, name, [params_cell()])
    (tmp_path / ".ipynb_checkpoints").mkdir()
    write_study(tmp_path / ".ipynb_checkpoints", "a-checkpoint", [params_cell()])
    assert report.discover_studies(tmp_path) == ["a", "b"]


def test_assemble_drops_stale_build_only_when_the_toc_changes(sample, tmp_path):
    """A removed chapter must not survive in _build; an unchanged table of contents keeps the incremental build."""
    from _report_book import copy_book_skeleton, write_module_notebook
    book, nbs = copy_book_skeleton(tmp_path / "book"), tmp_path / "nbs"
    write_module_notebook(nbs)
    fine = report.run_study("fine", "smoke", sample["out_root"], **sample["where"])
    stale = book / "_build" / "html" / "chapters" / "old.html"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    report.assemble_book([fine], book, nbs)
    assert not stale.exists()
    assert sorted(p.name for p in (book / "chapters").iterdir()) == ["fine.ipynb"]
    assert [p.name for p in (book / "api").iterdir()] == ["00_demo.ipynb"]
    stale.parent.mkdir(parents=True)
    stale.write_text("kept")
    report.assemble_book([fine], book, nbs)
    assert stale.exists()
