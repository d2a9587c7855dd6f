"""End-to-end tests of the ``calim`` command on a small demo experiment."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import pytest

from calim_helpers import demo
from calim_helpers.cli import main


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    return demo.write_demo_experiment(root, n_frames=60, frame_shape=(48, 64), seed=3)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_run_writes_outputs_and_never_touches_the_input(experiment, tmp_path, capsys):
    before = _tree_digest(experiment)
    out = tmp_path / "out"
    assert main(["run", str(experiment), "--out", str(out)]) == 0
    assert _tree_digest(experiment) == before
    rows = _rows(out / experiment.name / "sessions.csv")
    assert [r["session"] for r in rows] == ["230404_5", "230404_9", "230405_2", "230405_7"]
    assert all(r["status"] == "ok" for r in rows)
    for r in rows:
        png = out / experiment.name / r["date"] / r["session"] / f"{r['session']}_rois.png"
        assert png.stat().st_size > 1000
        assert r["downsampled_shape"] == "6x24x32"
        assert int(r["n_rois"]) >= 1
    assert not list(out.rglob("*.part*")), "temporary files left behind"
    assert "4 session(s) done" in capsys.readouterr().out


def test_a_broken_session_is_reported_and_the_others_complete(experiment, tmp_path, capsys):
    exp = tmp_path / experiment.name
    shutil.copytree(experiment, exp)
    stack = exp / "04-04-23" / "230404_9" / "230404_9_MMStack_Pos0.ome.tif"
    stack.write_bytes(stack.read_bytes()[:5000])  # truncated
    shutil.rmtree(exp / "05-04-23" / "230405_2" / "Rois")  # no ROI set
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="no ROI set"):
        code = main(["run", str(exp), "--out", str(out)])
    assert code == 1
    rows = {r["session"]: r for r in _rows(out / exp.name / "sessions.csv")}
    assert rows["230404_9"]["status"] == "failed"
    assert rows["230404_9"]["step"] == "load"
    assert "230404_9_MMStack_Pos0.ome.tif" in rows["230404_9"]["reason"]
    assert rows["230405_2"]["status"] == "skipped"
    assert rows["230404_5"]["status"] == rows["230405_7"]["status"] == "ok"
    text = capsys.readouterr().out
    assert "2 session(s) done, 1 skipped, 1 failed" in text
    assert "failed: " in text and "04-04-23_230404_9 at step 'load'" in text


def test_output_inside_input_is_refused(experiment, capsys):
    assert main(["run", str(experiment), "--out", str(experiment / "results")]) == 2
    assert "lies inside the input" in capsys.readouterr().err


def test_bad_parameter_is_named(experiment, tmp_path, capsys):
    assert main(["run", str(experiment), "--out", str(tmp_path), "-p", "downsample.t", "2"]) == 1
    assert "unknown parameter 'downsample.t'" in capsys.readouterr().err


def test_sessions_lists_what_was_found(experiment, capsys):
    assert main(["sessions", str(experiment)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    assert lines[2].split("\t")[:3] == [experiment.name, "05-04-23", "230405_2"]
    assert lines[2].endswith("Rois/Rois.zip")


def test_demo_data_refuses_to_overwrite(tmp_path, capsys):
    (tmp_path / "DEMO").mkdir()
    assert main(["demo-data", str(tmp_path)]) == 2
    assert "exists (use --overwrite)" in capsys.readouterr().err
