"""The report step end to end at the smoke profile, on two tiny studies written here (one fine, one failing)."""
import json
import re
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
    headline = json.loads((runs / "fine" / "headline.json").read_text())
    assert [c["id"] for c in headline["claims"]] == ["slope", "offset", "third"]
    html = sample["book_dir"] / "_build" / "html"
    for page in ("index.html", "intro.html", "summary.html", "provenance.html", "chapters/fine.html",
                 "chapters/broken.html", "api/00_demo.html"):
        assert (html / page).exists(), page
    assert list((html / "_images").glob("*.png")), "the fine study's figure is not in the book"
    assert (html / "mathjax" / "tex-mml-chtml.js").exists()


def test_intro_opens_with_the_findings(sample):
    """Failed studies first, then per study its first two claims as sentences and its key figure, copied into the book."""
    intro = (sample["book_dir"] / "intro.md").read_text()
    assert intro.index("1 of 2 studies failed") < intro.index("## Findings") < intro.index("## About this book")
    fine = intro[intro.index("### [Fine study](chapters/fine.ipynb)"):intro.index("## About this book")]
    assert ("- {bdg-success}`resolved` The line rises with the given slope: **1.00 [0.50, 1.50]** "
            "(95% t-interval over seeds, 3 seeds).") in fine
    assert "{bdg-warning}`unresolved` The offset is within the noise: **0.010 [-0.020, 0.040]**" in fine
    assert "A third claim" not in fine and "1 more claim in the [summary](summary.md)" in fine
    assert ":::{figure} figures/fine/line.png" in fine
    figure = sample["book_dir"] / "figures" / "fine" / "line.png"
    assert figure.read_bytes() == (sample["out_root"] / "smoke" / "fine" / "figures" / "line.png").read_bytes()
    assert "No claims yet: the study failed: `RuntimeError: deliberate failure" in intro


def test_summary_is_the_claims_table(sample):
    """One table of claims per study with verdicts; a note that no earlier build is recorded, or what moved."""
    summary = (sample["book_dir"] / "summary.md").read_text()
    assert "| The line rises with the given slope. | 1.00 [0.50, 1.50] | 3 | {bdg-success}`resolved` |" in summary
    assert "3 in all (2 resolved, 1 unresolved)" in summary
    assert "No claims yet: the study failed" in summary
    snapshot = json.loads((sample["out_root"] / "smoke" / report.CLAIMS_SNAPSHOT).read_text())
    assert [c["id"] for c in snapshot["claims"]] == ["slope", "offset", "third"]


def test_chapters_are_dressed_for_readers(sample):
    """Code folded, parameters once as a table, no absolute path of the build, tables rounded, bars dropped."""
    text = (sample["book_dir"] / "chapters" / "fine.ipynb").read_text()
    nb = nbformat.reads(text, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all({"hide-input", "remove-cell"} & set(c.metadata["tags"]) for c in code)
    table = next(c.source for c in nb.cells if c.source.startswith(":::{dropdown} Parameters of this run"))
    assert table.startswith(':::{dropdown} Parameters of this run: profile = "smoke", out_dir = "runs/smoke/fine" '
                            '(set by the report); 1 notebook defaults\n')
    cells = re.findall(r"<td>(.*?)</td>", table)
    assert cells == ["profile", '"smoke"', "report", "", "out_dir", '"runs/smoke/fine"', "report", "",
                     "scale", "1.0", "default", "slope of the line"]
    assert str(sample["root"]) not in text and "/tmp/" not in text
    assert "figures written to runs/smoke/fine/figures" in text
    html = "".join(o.data["text/html"] for c in code for o in c.outputs if "text/html" in o.get("data", {}))
    assert "<td>0.1235</td>" in html and "<td>12.35</td>" in html and "0.123456789" not in html
    assert "trials:" not in text
    executed = (sample["out_root"] / "smoke" / "fine" / "fine.ipynb").read_text()
    assert str(sample["out_root"]) in executed, "the run directory's notebook is left as papermill wrote it"


def test_api_pages_show_example_outputs(sample):
    """Module notebooks run into book/api with their outputs; nbdev directives become tags; nbs/ is untouched."""
    src = sample["nbs_dir"] / "00_demo.ipynb"
    assert not any(c.get("outputs") for c in nbformat.read(src, as_version=4).cells)
    nb = nbformat.read(sample["book_dir"] / "api" / "00_demo.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.metadata.get("tags", []) for c in code] == [["remove-cell"], [], [], []]
    assert code[1].source.startswith("def f(x)") and code[2].outputs[0].text == "f(21) = 42\n"
    assert code[3].outputs == [] and nb.metadata["ablation_harness"]["error"] is None
    assert "f(21) = 42" in (sample["book_dir"] / "_build" / "html" / "api" / "00_demo.html").read_text()


def test_second_run_is_a_cache_hit(sample, capsys):
    """A no-change report re-executes nothing that succeeded; the failed study is retried."""
    fine_nb = sample["out_root"] / "smoke" / "fine" / "fine.ipynb"
    before = fine_nb.stat().st_mtime_ns
    api_page = sample["book_dir"] / "api" / "00_demo.ipynb"
    api_before = api_page.stat().st_mtime_ns
    code = report.make_report("smoke", out_root=sample["out_root"], book_dir=sample["book_dir"],
                              nbs_dir=sample["nbs_dir"], **sample["where"])
    out = capsys.readouterr().out
    assert code == 1
    assert "[2/2] fine: cached" in out and "[1/2] broken: failed" in out
    assert "-- RuntimeError: deliberate failure (cell [3])\n    executed notebook: " in out
    assert out.split("executed notebook: ")[1].split("\n")[0].endswith("smoke/broken/broken.ipynb")
    assert fine_nb.stat().st_mtime_ns == before
    assert api_page.stat().st_mtime_ns == api_before, "an unchanged API notebook is not executed again"
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
    assert json.loads((changed.out_dir / "headline.json").read_text())["claims"][0]["estimate"] == 3.0
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


def test_progress_line_forwards_the_study_bar(sample, tmp_path, capfd, monkeypatch):
    """On a terminal a study draws one line with its own bar (the sweep's trials) as postfix; no kernel warning."""
    monkeypatch.delenv("CI", raising=False)            # bars are off in CI; this test is about a terminal
    with report.study_progress("[1/1] fine", sample["exp_dir"] / "fine.ipynb", enabled=True):
        r = report.run_study("fine", "smoke", tmp_path, **sample["where"])
    err = capfd.readouterr().err
    assert r.state == "ok" and "[1/1] fine" in err and "trials 3/3 [" in err
    assert "without encryption" not in err
    assert "ABLATION_HARNESS_PROGRESS" not in __import__("os").environ


def _study(root, name, headline, state="ok"):
    """A finished study without a notebook: its run dir and headline.json only."""
    out = root / "runs" / "smoke" / name
    out.mkdir(parents=True, exist_ok=True)
    if headline is not None:
        (out / "headline.json").write_text(json.dumps(headline))
    return report.StudyResult(name, state, 1.0, out, None, None if state == "ok" else "ValueError: x", "smoke")


def test_summary_flags_claims_that_moved_between_builds(tmp_path):
    """The second build compares with the first: a flipped verdict and an estimate outside its old interval are
    flagged, new and removed claims listed; the old flat headline shows as 'no claims yet'."""
    from _report_book import copy_book_skeleton
    from ablation_harness.stats import claim
    book, nbs, snap = copy_book_skeleton(tmp_path / "book"), tmp_path / "nbs", tmp_path / "runs" / "smoke"
    nbs.mkdir()
    ctx = {"profile": "smoke", "seeds": [0, 1], "wall_time_s": 2.0, "converged": True, "key_figure": "missing.png"}

    def build(claims):
        a = _study(tmp_path, "alpha", {"study": "alpha", "context": ctx, "claims": claims})
        legacy = _study(tmp_path, "legacy", {"slope": 1.0, "seeds": [0]})
        report.assemble_book([a, legacy], book, nbs, tmp_path / "runs", snap)
        return (book / "summary.md").read_text()

    first = build([claim("kept", "Kept.", 1.0, [0.9, 1.1], 2, "resolved"),
                   claim("flips", "Flips.", 0.3, [0.1, 0.5], 2, "resolved"),
                   claim("moves", "Moves.", 5.0, [4.0, 6.0], 2, "resolved"),
                   claim("dropped", "Dropped.", 1.0, [0.0, 2.0], 2, "unresolved")])
    assert "No earlier build is recorded" in first
    assert "No claims yet: its `headline.json` predates the claims format" in first
    second = build([claim("kept", "Kept.", 1.05, [0.95, 1.15], 2, "resolved"),
                    claim("flips", "Flips.", 0.2, [-0.1, 0.5], 2, "unresolved"),
                    claim("moves", "Moves.", 7.0, [6.5, 7.5], 2, "resolved"),
                    claim("added", "Added.", 3.0, [2.0, 4.0], 2, "resolved")])
    assert "**2 claims moved since the previous build" in second
    assert "`flips`: verdict flipped: resolved → unresolved" in second
    assert "`moves`: estimate left the previous interval (was 5.0 [4.0, 6.0])" in second
    assert "`added`: new" in second and "`dropped`: removed (was 1.0 [0.0, 2.0], unresolved)" in second
    assert "| Kept. | 1.05 [0.95, 1.15] | 2 | {bdg-success}`resolved` | unchanged |" in second
    assert "| ⚠ verdict flipped" in second
    previous = json.loads((snap / report.CLAIMS_PREVIOUS).read_text())
    assert {c["id"] for c in previous["claims"]} == {"kept", "flips", "moves", "dropped"}
    intro = (book / "intro.md").read_text()
    assert "figure" not in intro.split("## Findings")[1].split("## About")[0].replace("key figure", ""), \
        "a key figure that does not exist is not shown"
    assert "_No claims yet: its `headline.json` predates the claims format._" in intro


def test_provenance_shows_the_lock_hash(sample):
    """The provenance page names each lock file with its sha256."""
    import hashlib
    page = (sample["book_dir"] / "provenance.md").read_text()
    for name in report.LOCK_FILES:
        digest = hashlib.sha256((report.REPO_DIR / name).read_bytes()).hexdigest()
        assert f"| `{name}` | `{digest}` |" in page
    assert "report --only fine --profile smoke" in page
