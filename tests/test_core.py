"""core: atomic writes, tolerant JSONL, run directories, seeding."""
import json
import os

import pytest
import torch

from ablation_harness.core import (RunDir, append_jsonl, atomic_write_json, read_jsonl, safe_name,
                                   seed_everything)


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    f = tmp_path / "a.json"
    atomic_write_json(f, {"v": 1})

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_json(f, {"v": 2})
    assert json.loads(f.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left


def test_torn_jsonl_lines_are_skipped_and_never_glued_to_the_next_record(tmp_path):
    f = tmp_path / "m.jsonl"
    append_jsonl(f, [{"a": 1}, {"a": 2}])
    with open(f, "a") as h:
        h.write('{"a": 3')                                  # a crash in the middle of an append
    with pytest.warns(UserWarning, match="torn line 3"):
        assert read_jsonl(f) == [{"a": 1}, {"a": 2}]
    append_jsonl(f, {"a": 4})                               # starts a fresh line instead of extending the torn one
    assert f.read_text().splitlines() == ['{"a": 1}', '{"a": 2}', '{"a": 3', '{"a": 4}']
    with pytest.warns(UserWarning, match="torn line 3"):
        assert read_jsonl(f) == [{"a": 1}, {"a": 2}, {"a": 4}]
    f.write_bytes(b'{"a": 1}\n\xff\xfe\n{"a": 2}\n')        # undecodable bytes are a torn line too
    with pytest.warns(UserWarning, match="torn line 2"):
        assert read_jsonl(f) == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize("bad", ["../../etc", "a/b", "x\\..\\y", "/abs"])
def test_run_names_cannot_escape(tmp_path, bad):
    rd = RunDir.create(tmp_path, "study", bad)
    assert rd.path.parent.parent == tmp_path and "/" not in safe_name(bad)


def test_empty_names_are_refused(tmp_path):
    with pytest.raises(ValueError):
        RunDir.create(tmp_path, "study", "..")


def test_rundir_refuses_silent_overwrite(tmp_path):
    rd = RunDir.create(tmp_path, "s", "r")
    rd.write_json("summary.json", {"x": 1})
    with pytest.raises(FileExistsError):
        RunDir.create(tmp_path, "s", "r")
    assert RunDir.create(tmp_path, "s", "r", exist_ok=True).read_json("summary.json") == {"x": 1}


def test_seed_everything_repeats_draws():
    seed_everything(5)
    a = torch.randn(4)
    seed_everything(5)
    assert torch.equal(a, torch.randn(4))


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    """mkstemp creates 0600 files; an atomically written file gets 0666 minus the umask, like open() would."""
    import stat
    from ablation_harness.core import atomic_write_text
    umask = os.umask(0o022)
    os.umask(umask)
    p = atomic_write_text(tmp_path / "a.txt", "x")
    with open(tmp_path / "b.txt", "w") as f:
        f.write("x")
    assert stat.S_IMODE(p.stat().st_mode) == stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o666 & ~umask
