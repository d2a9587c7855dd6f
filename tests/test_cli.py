"""End-to-end tests of ``calim run`` (papermill over notebooks 01-04) on a tiny experiment."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from calim_helpers import demo
from calim_helpers.cli import main

FAST = ["-p", "figures.per_roi", "false"]


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    return demo.write_demo_experiment(root, n_frames=200, frame_shape=(48, 64), seed=3)


@pytest.fixture(scope="module")
def run(experiment, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    before = _tree_digest(experiment)
    code = main(["run", str(experiment), "--out", str(out)])
    return {"code": code, "out": out / experiment.name, "before": before}


def test_run_succeeds_and_never_touches_the_input(run, experiment):
    assert run["code"] == 0
    assert _tree_digest(experiment) == run["before"]
    assert not list(run["out"].rglob("*.part*")), "temporary files left behind"


def test_every_spec_output_exists(run):
    out = run["out"]
    for name in ("results_raw.csv", "results_norm.csv", "results_long.csv", "heatmap.pdf",
                 "hist_cum.pdf", "hist_cum.csv", "run_record.json"):
        assert (out / name).stat().st_size > 100, name
    for name in ("events.csv", "features.csv", "sessions_summary.pdf"):
        assert (out / name).stat().st_size > 100, name
    assert (out / "network_events.csv").read_text().startswith("date,session,start_frame")
    for nb in ("01_load", "02_rois", "03_arpls", "05_analysis", "04_aggregate"):
        assert (out / "notebooks" / f"{nb}.ipynb").exists()
        assert "<html" in (out / "notebooks" / f"{nb}.html").read_text()[:2000].lower()
    results = sorted(out.glob("*/*/*_result.zarr"))
    assert len(results) == 4
    for res in results:
        ds = xr.open_zarr(res)
        folder, s = res.parent, res.parent.name
        for suffix in ("rois", "shifts", "registration", "raster", "correlation", "clusters",
                       "summary", "qc"):
            assert (folder / f"{s}_{suffix}.png").exists(), suffix
        assert (folder / "shifts.csv").exists() and (folder / "ROIs_auto.zip").exists()
        for n in ds["roi"].values.tolist():
            for fname in (f"{s}_mask{n}.png", f"{s}_mask_arpls_clean_{n}.png",
                          f"{s}_mask_arpls_NORM_{n}.png"):
                assert (folder / fname).stat().st_size > 1000, fname


def test_results_norm_is_one_column_per_roi_not_running_sums(run):
    out = run["out"]
    rows = _rows(out / "results_norm.csv")
    columns = list(rows[0])
    assert columns[:2] == ["frame", "time_s"]
    results = sorted(out.glob("*/*/*_result.zarr"))
    expected_cols = []
    for res in results:
        ds = xr.open_zarr(res).load()
        date, s = res.parent.parent.name, res.parent.name
        for i, n in enumerate(ds["roi"].values.tolist()):
            col = f"{date}_{s}_ROI{n}"
            expected_cols.append(col)
            written = np.array([float(r[col]) for r in rows])
            np.testing.assert_allclose(written, ds["norm"].values[i], rtol=1e-6)
    assert columns[2:] == expected_cols
    assert len(rows) == 20  # 200 frames / 10
    average = _rows(out / "hist_cum.csv")
    norm = np.array([[float(r[c]) for c in expected_cols] for r in rows])
    np.testing.assert_allclose([float(r["mean"]) for r in average], np.nanmean(norm, axis=1),
                               rtol=1e-6)


def test_tidy_table_and_record(run, experiment):
    out = run["out"]
    rows = _rows(out / "results_long.csv")
    first = rows[0]
    for key in ("experiment", "date", "session", "roi", "frame", "time_s", "raw", "background",
                "baseline", "corrected", "dff", "dff_raw", "norm", "normalize"):
        assert key in first
    assert first["normalize"] == "dff"
    n_cells = len(_rows(out / "results_norm.csv")[0]) - 2
    assert len(rows) == n_cells * 20
    record = json.loads((out / "run_record.json").read_text())
    assert record["params"]["downsample"] == {"time": 10, "y": 2, "x": 2}
    assert record["versions"]["numpy"]
    some = next(k for k in record["inputs_sha256"] if k.endswith(".ome.tif"))
    assert record["inputs_sha256"][some] == hashlib.sha256(
        (experiment / some).read_bytes()).hexdigest()


def test_a_broken_session_is_reported_and_the_others_complete(experiment, tmp_path, capsys):
    exp = tmp_path / experiment.name
    shutil.copytree(experiment, exp)
    stack = exp / "04-04-23" / "230404_9" / "230404_9_MMStack_Pos0.ome.tif"
    stack.write_bytes(stack.read_bytes()[:5000])  # truncated
    shutil.rmtree(exp / "05-04-23" / "230405_2" / "Rois")  # no ROI set
    out = tmp_path / "out"
    code = main(["run", str(exp), "--out", str(out), *FAST])
    assert code == 1
    load = {r["session"]: r for r in _rows(out / exp.name / "status" / "load.csv")}
    assert load["04-04-23_230404_9"]["status"] == "failed"
    assert "230404_9_MMStack_Pos0.ome.tif" in load["04-04-23_230404_9"]["reason"]
    rois = {r["session"]: r for r in _rows(out / exp.name / "status" / "rois.csv")}
    assert rois["04-04-23_230404_9"]["status"] == "skipped"
    # rois.source: auto_if_missing (the default) detects the ROIs of the session without any
    assert rois["05-04-23_230405_2"]["status"] == "ok"
    assert rois["05-04-23_230405_2"]["roi_source"] == "auto"
    assert rois["04-04-23_230404_5"]["roi_source"] == "expert"
    norm = _rows(out / exp.name / "results_norm.csv")[0]
    assert {c.rsplit("_ROI", 1)[0] for c in list(norm)[2:]} == {
        "04-04-23_230404_5", "05-04-23_230405_2", "05-04-23_230405_7"}
    text = capsys.readouterr().out
    assert "failed: " + exp.name + " 04-04-23_230404_9 at step 'load'" in text
    assert "skipped: " + exp.name + " 04-04-23_230404_9 at step 'rois'" in text
    # with expert ROIs required, the session without a ROI set is skipped and named
    out2 = tmp_path / "out2"
    assert main(["run", str(exp), "--out", str(out2), "-p", "rois.source", "expert",
                 *FAST]) == 1
    rois = {r["session"]: r for r in _rows(out2 / exp.name / "status" / "rois.csv")}
    assert rois["05-04-23_230405_2"]["status"] == "skipped"
    assert "no ROI set" in rois["05-04-23_230405_2"]["reason"]


def test_several_experiments_are_compared(experiment, tmp_path):
    second = tmp_path / "OTHER"
    demo.write_demo_experiment(tmp_path, name="OTHER", n_frames=200, frame_shape=(48, 64),
                               seed=4)
    out = tmp_path / "out"
    assert main(["run", str(experiment), str(second), "--out", str(out), *FAST]) == 0
    table = _rows(out / "comparison" / "comparison_cells.csv")
    assert {r["experiment"] for r in table} == {experiment.name, "OTHER"}
    assert (out / "comparison" / "comparison.pdf").stat().st_size > 1000
    assert (out / "comparison" / "condition_summary.pdf").stat().st_size > 1000
    tests = _rows(out / "comparison" / "condition_tests.csv")
    tested = [r for r in tests if r["test"] == "mannwhitney"]
    assert {r["metric"] for r in tested} >= {"rate_per_min", "mean_amplitude"}
    assert all(0.0 <= float(r["p_value"]) <= 1.0 for r in tested)


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
