"""The report resumes an interrupted study: the sweep picks up where it stopped, no finished trial runs again.

`report --only batch_scaling --profile smoke` runs `report.run_study` for the study; here it runs in a subprocess
(into a temporary out_root, without the book build) and is killed with SIGKILL, together with its papermill kernel
and the kernel's sweep workers, right after the sweep recorded its first trial. A test-only `sitecustomize` holds
the kernel at that point, so the kill never depends on timing.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from ablation_harness import report
from ablation_harness.core import read_jsonl

sys.path.insert(0, str(Path(__file__).parent))
from _report_book import params_cell, write_study  # noqa: E402

HOOKS = Path(__file__).parent / "hooks"
RUN = ("import sys; from ablation_harness.report import run_study; "
       "r = run_study('batch_scaling', 'smoke', sys.argv[1], extra_params={'n_boot': 50}); print(r.state, r.error)")


def test_killed_study_resumes_its_sweep_without_redoing_finished_trials(tmp_path):
    runs, gate = tmp_path / "runs", tmp_path / "gate"
    env = {**os.environ, "AH_TEST_HOLD_AFTER_RECORD": str(gate),
           "PYTHONPATH": os.pathsep.join([str(HOOKS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", RUN, str(runs)], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    held = Path(f"{gate}.held")
    while not held.exists():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    os.killpg(int(held.read_text()), signal.SIGKILL)          # the kernel and its sweep workers
    os.killpg(proc.pid, signal.SIGKILL)                       # the report process
    proc.wait()
    study = runs / "smoke" / "batch_scaling"
    assert json.loads((study / report.MANIFEST).read_text())["state"] == "running"
    first = read_jsonl(study / "sweep" / "results.jsonl")
    assert len(first) == 1
    done = Path(first[0]["run_dir"])
    stamp = (done / "summary.json").stat().st_mtime_ns

    r = subprocess.run([sys.executable, "-c", RUN, str(runs)], capture_output=True, text=True, timeout=1800)
    assert r.stdout.split()[:1] == ["ok"], r.stdout + r.stderr[-3000:]
    recs = read_jsonl(study / "sweep" / "results.jsonl")
    assert len(recs) > 1 and len({x["config_hash"] for x in recs}) == len(recs)   # every trial recorded once
    assert recs[0] == first[0] and all(x["state"] in ("COMPLETE", "DIVERGED") for x in recs)
    assert (done / "summary.json").stat().st_mtime_ns == stamp                 # the finished trial did not run again
    assert not list(done.parent.glob(f"{done.name}.attempt*"))
    assert json.loads((study / report.MANIFEST).read_text())["state"] == "ok"
    assert json.loads((study / "headline.json").read_text())["claims"]


def test_same_key_keeps_the_folder_and_another_key_starts_clean(tmp_path):
    """A failed run is resumed in place (same key); a changed parameter (another key) empties the folder."""
    exp = tmp_path / "exp"
    exp.mkdir()
    body = ("from pathlib import Path\n"
            "runs = Path(out_dir) / 'attempts.txt'\n"
            "runs.write_text(runs.read_text() + 'x' if runs.exists() else 'x')\n"
            "if len(runs.read_text()) == 1 and scale == 1.0:\n"
            "    raise RuntimeError('first attempt fails')")
    write_study(exp, "s", [params_cell("scale = 1.0"), nbformat.v4.new_code_cell(body)])
    kw = {"exp_dir": exp}
    first = report.run_study("s", "smoke", tmp_path / "runs", **kw)
    assert first.state == "failed"
    second = report.run_study("s", "smoke", tmp_path / "runs", **kw)
    assert second.state == "ok" and (second.out_dir / "attempts.txt").read_text() == "xx"     # resumed in place
    assert report.run_study("s", "smoke", tmp_path / "runs", **kw).state == "cached"
    other = report.run_study("s", "smoke", tmp_path / "runs", extra_params={"scale": 2.0}, **kw)
    assert other.state == "ok" and (other.out_dir / "attempts.txt").read_text() == "x"        # started clean


def test_run_dirs_are_per_profile_and_a_folder_the_report_did_not_make_is_never_emptied(tmp_path):
    """`runs/<profile>/<study>`; files there without a manifest (e.g. `ablate --out_dir` output) refuse the study."""
    assert report.study_dir(report.OUT_ROOT, "report", "s") == report.REPO_DIR / "runs" / "report" / "s"
    exp = tmp_path / "exp"
    exp.mkdir()
    write_study(exp, "s", [params_cell("scale = 1.0"), nbformat.v4.new_code_cell("x = 1")])
    mine = tmp_path / "runs" / "smoke" / "s" / "s" / "run_1" / "metrics.jsonl"
    mine.parent.mkdir(parents=True)
    mine.write_text("{}\n")
    r = report._run_or_fail("s", "smoke", tmp_path / "runs", False, {"exp_dir": exp})
    assert r.state == "failed" and r.error.startswith("FileExistsError: ") and "did not write" in r.error
    assert mine.read_text() == "{}\n"
