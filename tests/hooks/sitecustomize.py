"""Test-only hook (on PYTHONPATH only in tests/test_report_resume.py), active when AH_TEST_HOLD_AFTER_RECORD is set.

After the first record is appended to any `results.jsonl`, it writes this process's group id to
`$AH_TEST_HOLD_AFTER_RECORD.held` and holds the process there, so a test can kill a sweep (and the papermill
kernel running it) at a known point: one trial recorded, the others not. Python imports `sitecustomize` at
start-up, so the hook is in place in the kernel before the sweep module binds `append_jsonl`.
"""
import os

if os.environ.get("AH_TEST_HOLD_AFTER_RECORD"):
    import time

    import ablation_harness.core as _core

    _append = _core.append_jsonl

    def _append_then_hold(path, rows):
        _append(path, rows)
        if os.path.basename(str(path)) == "results.jsonl":
            target = os.environ["AH_TEST_HOLD_AFTER_RECORD"] + ".held"
            with open(target + ".tmp", "w") as f:
                f.write(str(os.getpgid(0)))
            os.replace(target + ".tmp", target)
            while True:
                time.sleep(3600)

    _core.append_jsonl = _append_then_hold
