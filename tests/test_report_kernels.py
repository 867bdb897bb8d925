"""The report's kernels: unix sockets in a private folder (no TCP port to race for), their output in a log and
not on the report's terminal, and no nbclient atexit hook left behind when a kernel dies before replying."""
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from ablation_harness import report

sys.path.insert(0, str(Path(__file__).parent))
from _report_book import params_cell, write_study  # noqa: E402

PROBE = ("from ipykernel.connect import get_connection_info\n"
         "info = get_connection_info(unpack=True)\nprint(info['transport'], info['ip'])")


def test_kernels_started_together_each_use_unix_sockets_of_their_own(tmp_path):
    """Four API pages run at once (the report runs two): all finish, each kernel on ipc in its own folder."""
    src = tmp_path / "probe.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(PROBE)]), src)
    cwds = [tmp_path / f"cwd{i}" for i in range(4)]
    for d in cwds:
        d.mkdir()
    with ThreadPoolExecutor(len(cwds)) as pool:
        done = list(pool.map(lambda d: report.execute_api_notebook(src, d), cwds))
    assert [error for _, error in done] == [None] * len(cwds)
    seen = [nb.cells[0].outputs[0].text.split() for nb, _ in done]
    assert [transport for transport, _ in seen] == ["ipc"] * len(cwds)
    folders = {Path(ip).parent for _, ip in seen}
    assert len(folders) == len(cwds) and all(f.name.startswith("ah-kernel-") for f in folders)
    assert not any(f.exists() for f in folders)   # removed with the socket files once the page is done


DIES = """\
import sys
from ablation_harness import report
report.KERNEL_ARGS = [*report.KERNEL_ARGS, "--IPKernelApp.exec_lines=['import os; os._exit(3)']"]  # dies at start
nb, error = report.execute_api_notebook(sys.argv[1], sys.argv[2])
print(error)
"""


def test_a_kernel_that_dies_before_replying_is_an_error_line_and_the_process_exits_cleanly(tmp_path):
    """The failure of the report-profile build, injected: the error line names it; no atexit traceback at exit."""
    src = tmp_path / "probe.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("1 + 1")]), src)
    r = subprocess.run([sys.executable, "-c", DIES, str(src), str(tmp_path)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "RuntimeError: Kernel died before replying to kernel_info"
    assert "Exception ignored" not in r.stderr and "AssertionError" not in r.stderr, r.stderr


CHATTY = """\
import os, subprocess
os.write(1, b"kernel fd 1\\n")
os.write(2, b"kernel fd 2\\n")
subprocess.run(["echo", "a child of the kernel"])
print("a print")
"""
RUN = ("import sys; from ablation_harness.report import run_study; "
       "r = run_study('chatty', 'smoke', sys.argv[1], exp_dir=sys.argv[2]); print('STATE', r.state, r.error)")


def test_what_a_study_writes_below_python_reaches_its_log_and_notebook_not_the_terminal(tmp_path):
    """The report process's stdout and stderr carry none of the kernel's fd-level output or its children's."""
    exp = tmp_path / "exp"
    exp.mkdir()
    write_study(exp, "chatty", [params_cell(), new_code_cell(CHATTY)])
    r = subprocess.run([sys.executable, "-c", RUN, str(tmp_path / "runs"), str(exp)], capture_output=True, text=True,
                       timeout=600)
    assert r.stdout == "STATE ok None\n" and r.stderr == "", r.stdout + r.stderr
    out = tmp_path / "runs" / "smoke" / "chatty"
    log = (out / report.KERNEL_LOG).read_text()
    assert all(line in log for line in ("kernel fd 1", "kernel fd 2", "a child of the kernel")), log
    shown = "".join(o.get("text", "") for c in nbformat.read(out / "chatty.ipynb", as_version=4).cells
                    for o in c.get("outputs", []))
    assert "a print" in shown, shown   # (ipykernel forwards fd-level output too, but may miss a cell's last lines)


FORKED = """\
import os, sys
print(sorted(m for m in ("torch", "sklearn", "ablation_harness.sweep", "ipykernel.ipkernel") if m in sys.modules))
print(os.getcwd())
print(os.environ.get("AH_KERNEL_PROBE"))
from ablation_harness.registry import CALLBACKS
print("kernel_probe" in CALLBACKS)
CALLBACKS.register("kernel_probe", object)
import matplotlib.pyplot as plt
plt.plot([0, 1])
plt.show()
"""


def test_kernels_fork_with_the_imports_done_and_inherit_nothing_from_each_other(tmp_path, monkeypatch):
    """Before its first cell a kernel has torch, scikit-learn and the package (imported once, by the fork server);
    it works in its own folder with the environment of its start, draws inline, and does not see what the previous
    kernel registered."""
    src = tmp_path / "probe.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(FORKED)]), src)
    for value in ("first", "second"):
        monkeypatch.setenv("AH_KERNEL_PROBE", value)
        cwd = tmp_path / value
        cwd.mkdir()
        nb, error = report.execute_api_notebook(src, cwd)
        assert error is None
        outputs = nb.cells[0].outputs
        lines = outputs[0].text.splitlines()
        assert lines == [str(["ablation_harness.sweep", "ipykernel.ipkernel", "sklearn", "torch"]), str(cwd.resolve()),
                         value, "False"]
        assert [o.output_type for o in outputs[1:]] == ["display_data"] and "image/png" in outputs[1].data
