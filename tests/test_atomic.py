import numpy as np
import pytest

from clinfuse.etl.atomic import atomic_dir, write_json, write_npy


def test_atomic_dir_keeps_previous_output_when_the_stage_fails(tmp_path):
    out = tmp_path / "cohort"
    with atomic_dir(out, "cohort") as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_dir(out, "cohort") as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("crash mid-stage")
    assert (out / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["cohort"]


def test_atomic_dir_replaces_output_whole_on_success(tmp_path):
    out = tmp_path / "cohort"
    with atomic_dir(out, "cohort") as tmp:
        (tmp / "old.txt").write_text("x")
    with atomic_dir(out, "cohort") as tmp:
        (tmp / "new.txt").write_text("y")
    assert sorted(p.name for p in out.iterdir()) == [".clinfuse-output.json", "new.txt"]


def test_npy_and_json_writers_leave_no_temp_files(tmp_path):
    write_npy(tmp_path / "x.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    write_json(tmp_path / "m.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "x.npy"]
    assert np.load(tmp_path / "x.npy", mmap_mode="r").shape == (2, 3)
