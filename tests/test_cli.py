"""End-to-end tests of ``calim``: the shared run of conftest.py, and the error paths."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pytest
import xarray as xr
from _untidy import read_stack, replace_with_tiff
from conftest import tree_digest

from calim_helpers import demo, io
from calim_helpers.cli import build_parser, main
from calim_helpers.workflow.papermill import NOTEBOOKS

FAST = ["-q", "-p", "figures.per_roi", "false", "-p", "registration.enabled", "false"]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small")
    return demo.write_demo_experiment(root, n_frames=200, frame_shape=(48, 64), seed=3)


def test_run_succeeds_and_never_touches_the_input(e2e):
    assert e2e.code == 0
    assert tree_digest(e2e.data) == e2e.before
    assert not list(e2e.out.rglob("*.part*")), "temporary files left behind"


def test_every_spec_output_exists(e2e):
    out = e2e.root
    for name in ("results_raw.csv", "results_norm.csv", "results_long.csv", "heatmap.pdf",
                 "hist_cum.pdf", "hist_cum.csv", "run_record.json", "events.csv",
                 "features.csv", "sessions_summary.pdf", "experiment.zarr"):
        assert (out / name).exists(), name
    assert (out / "network_events.csv").read_text().startswith("date,session,start_frame")
    for nb in NOTEBOOKS:
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
        assert (folder / f"{s}.nwb").stat().st_size > 1000
        corrected = io.open_movie(folder / f"{s}_corrected.ome.tif")  # outputs.movie
        np.testing.assert_array_equal(corrected.values,
                                      xr.open_zarr(folder / f"{s}_load.zarr")["movie"].values)
        assert corrected.attrs["frame_interval_s"] == pytest.approx(1.0)  # 10 x 0.1 s
        assert ds.sizes["roi"] > 0


def test_every_executed_notebook_shows_a_figure(e2e):
    for experiment in (e2e.experiment.name, e2e.other.name):
        for name in NOTEBOOKS:
            nb = nbformat.read(e2e.out / experiment / "notebooks" / f"{name}.ipynb", 4)
            images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                      if "image/png" in o.get("data", {})]
            assert images, f"{experiment} {name}: no figure in the executed notebook"
            reprs = [o["data"]["text/plain"] for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []) if "text/plain" in o.get("data", {})]
            assert not any("<Figure size" in r for r in reprs), f"{name}: a figure's repr"
        html = (e2e.out / experiment / "notebooks" / "01_load.html").read_text()
        assert "data:image/png;base64" in html


def test_results_norm_is_one_column_per_roi_not_running_sums(e2e):
    out = e2e.root
    rows = _rows(out / "results_norm.csv")
    columns = list(rows[0])
    assert columns[:2] == ["frame", "time_s"]
    expected_cols = []
    for res in sorted(out.glob("*/*/*_result.zarr")):
        ds = xr.open_zarr(res).load()
        date, s = res.parent.parent.name, res.parent.name
        for i, n in enumerate(ds["roi"].values.tolist()):
            col = f"{date}_{s}_ROI{n}"
            expected_cols.append(col)
            written = np.array([float(r[col]) for r in rows])
            np.testing.assert_allclose(written, ds["norm"].values[i], rtol=1e-6)
    assert columns[2:] == expected_cols
    assert len(rows) == 60  # 600 frames / 10
    average = _rows(out / "hist_cum.csv")
    norm = np.array([[float(r[c]) for c in expected_cols] for r in rows])
    np.testing.assert_allclose([float(r["mean"]) for r in average], np.nanmean(norm, axis=1),
                               rtol=1e-6)


def test_tidy_table_and_record(e2e):
    out = e2e.root
    rows = _rows(out / "results_long.csv")
    for key in ("experiment", "date", "session", "roi", "frame", "time_s", "raw", "background",
                "baseline", "corrected", "dff", "dff_raw", "norm", "normalize"):
        assert key in rows[0]
    assert rows[0]["normalize"] == "dff"
    n_cells = len(_rows(out / "results_norm.csv")[0]) - 2
    assert len(rows) == n_cells * 60
    record = json.loads((out / "run_record.json").read_text())
    assert record["params"]["downsample"] == {"time": 10, "y": 2, "x": 2}
    assert record["params"]["figures"]["dpi"] == 50
    assert record["command"][:2] == ["calim", "run"]
    assert record["versions"]["numpy"]
    some = next(k for k in record["inputs_sha256"] if k.endswith(".ome.tif"))
    assert record["inputs_sha256"][some] == hashlib.sha256(
        (e2e.experiment / some).read_bytes()).hexdigest()


def test_experiments_are_compared(e2e):
    comparison = e2e.out / "comparison"
    table = _rows(comparison / "comparison_cells.csv")
    assert {r["experiment"] for r in table} == {e2e.experiment.name, e2e.other.name}
    assert (comparison / "comparison.pdf").stat().st_size > 1000
    assert (comparison / "condition_summary.pdf").stat().st_size > 1000
    tests = _rows(comparison / "condition_tests.csv")
    assert {r["unit"] for r in tests} == {"session"}  # statistics.unit: the default
    tested = [r for r in tests if r["test"] == "mannwhitney"]
    assert {r["metric"] for r in tested} >= {"rate_per_min", "mean_amplitude"}
    assert all(0.0 <= float(r["p_value"]) <= 1.0 for r in tested)


def test_output_inside_input_is_refused(small, capsys):
    assert main(["run", str(small), "--out", str(small / "results")]) == 2
    assert "lies inside the input" in capsys.readouterr().err


@pytest.mark.parametrize("key, value, message", [
    ("downsample.t", "2", "downsample.t"),
    ("arpls.lam", "-5", "arpls.lam"),
    ("downsample.time", "0", "downsample.time"),
    ("background.fraction", "2", "background.fraction"),
    ("downsample.time", "150", "downsample.time"),  # more than the 200-frame sessions allow
    ("sessions", "230499_1", "230499_1"),
])
def test_a_bad_parameter_is_refused_before_any_work(small, tmp_path, capsys, key, value,
                                                    message):
    out = tmp_path / "out"
    assert main(["run", str(small), "--out", str(out), "-p", key, value]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], captured.err
    assert "Traceback" not in captured.err and "Results:" not in captured.out
    assert not out.exists(), "nothing may be computed or written"


def test_sessions_lists_what_was_found(small, capsys):
    assert main(["sessions", str(small)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    assert lines[2].split("\t")[:3] == [small.name, "05-04-23", "230405_2"]
    assert lines[2].endswith("Rois/Rois.zip")


def test_demo_data_refuses_to_overwrite(tmp_path, capsys):
    (tmp_path / "DEMO").mkdir()
    assert main(["demo-data", str(tmp_path)]) == 2
    assert "exists (use --overwrite)" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["run"], ["sessions"], ["demo-data"]])
def test_help_reads_cleanly(command, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for rst in ("``", ":func:", ":mod:", "--------\n"):
        assert rst not in text, (command, rst)
    assert text.startswith("usage: calim")


def test_a_killed_run_of_an_untidy_experiment_is_finished_by_the_next_run(e2e, tmp_path,
                                                                         capsys):
    """OTHER (already untidy) with a truncated stack, a session without ROI set and one
    whose frame interval is unknown: SIGKILL a real run mid-way, check what it left,
    re-run without a cluster (the clean run used one worker per core): the good
    sessions' outputs equal the clean run's, the broken session is named, the one
    without ROIs gets automatic ROIs, and every table counts frames."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import matplotlib.image

    exp = tmp_path / "data" / e2e.other.name
    shutil.copytree(e2e.other, exp)
    stack = exp / "04-04-23" / "230404_9" / "230404_9_MMStack_Default.ome.tif"
    unknown = exp / "05-04-23" / "230405_8"
    unknown.mkdir()
    replace_with_tiff(unknown, read_stack(stack), "movie.tif")  # no frame interval
    shutil.copy(next((exp / "04-04-23" / "230404_9").rglob("*.zip")), unknown / "RoiSet.zip")
    stack.write_bytes(stack.read_bytes()[:5000])  # truncated
    shutil.rmtree(exp / "05-04-23" / "230405_2" / "Rois")  # no ROI set
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "calim_helpers.cli", "run", str(exp), "--out", str(out),
           "-q", "-p", "figures.dpi", "50", "-p", "nwb.species", "Mus musculus"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(out.glob("*/*/*/*_traces.zarr")):
        time.sleep(0.2)  # kill it once the second step has begun writing
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    root = out / exp.name
    assert not (root / "results_norm.csv").exists()
    for path in root.rglob("*"):
        if ".part-" in path.name or path.is_dir():
            continue  # a temporary name says what it is
        if path.suffix == ".csv":
            assert path.read_text().strip(), path  # parses: header at least
        if path.suffix == ".png":
            assert matplotlib.image.imread(path).size, path
    for marker in root.glob("*/*/.calim/*.json"):
        store = {"load": "load", "rois": "traces", "arpls": "result"}.get(marker.stem)
        if store:
            s = marker.parent.parent
            assert (s / f"{s.name}_{store}.zarr" / ".zmetadata").exists(), marker

    assert main([*cmd[3:], "--workers", "1"]) == 1  # a session failed; no cluster this time
    text = capsys.readouterr().out
    assert "failed: " + exp.name + " 04-04-23_230404_9 at step 'load'" in text
    assert "skipped: " + exp.name + " 04-04-23_230404_9 at step 'rois'" in text
    assert "Open first: " in text and "05_aggregate.html" in text
    load = {r["session"]: r for r in _rows(root / "status" / "load.csv")}
    assert load["04-04-23_230404_9"]["status"] == "failed"
    assert "230404_9_MMStack_Default.ome.tif" in load["04-04-23_230404_9"]["reason"]
    rois = {r["session"]: r for r in _rows(root / "status" / "rois.csv")}
    assert rois["05-04-23_230405_2"]["roi_source"] == "auto"  # auto_if_missing, the default
    assert rois["04-04-23_230404_5"]["roi_source"] == "expert"
    clean = e2e.out / e2e.other.name
    for date, s in (("04-04-23", "230404_5"),):
        for name in (f"{s}_events.csv", f"{s}_features.csv", f"{s}_network_events.csv",
                     f"{s}_spectra.csv", "shifts.csv"):
            assert ((root / date / s / name).read_bytes()
                    == (clean / date / s / name).read_bytes()), name
        ds = xr.open_zarr(root / date / s / f"{s}_result.zarr")
        rois_n = ds["roi"].values.tolist()
        width = len(str(max(rois_n)))
        for n in rois_n:  # the lab's per-ROI PNGs, zero-padded to sort in ROI order
            for fname in (f"{s}_mask{n:0{width}d}.png", f"{s}_mask_arpls_clean_{n:0{width}d}.png",
                          f"{s}_mask_arpls_NORM_{n:0{width}d}.png"):
                assert (root / date / s / fname).stat().st_size > 1000, fname
    mine, theirs = _rows(root / "results_norm.csv"), _rows(clean / "results_norm.csv")
    kept = [c for c in mine[0] if c.startswith("04-04-23_230404_5")]
    assert kept and all(a[c] == b[c] for a, b in zip(mine, theirs, strict=True) for c in kept)
    # a session of unknown frame interval: said in the run's output, tables count frames
    assert "05-04-23_230405_8" in text and "frame interval unknown" in text
    header = (root / "05-04-23" / "230405_8" / "230405_8_features.csv").read_text()
    assert {"rate_per_60_frames", "mean_duration_frames"} <= set(header.split("\n")[0].split(","))
    for name in ("results_norm.csv", "results_long.csv", "hist_cum.csv", "events.csv",
                 "features.csv", "05-04-23/230405_8/230405_8_events.csv",
                 "05-04-23/230405_8/230405_8_spectra.csv"):
        first = (root / name).read_text().splitlines()[0].split(",")
        assert not [c for c in first if c.endswith(("_s", "_hz")) or c == "rate_per_min"], \
            (name, first)
        assert any(c.endswith(("_frames", "_per_frame")) for c in first), (name, first)
    # the sessions of known interval are converted to recorded frames, not relabelled
    dt = xr.open_zarr(root / "04-04-23" / "230404_5" / "230404_5_result.zarr").attrs[
        "frame_interval_s"]
    own = _rows(root / "04-04-23" / "230404_5" / "230404_5_events.csv")
    pooled = [r for r in _rows(root / "events.csv") if r["session"] == "230404_5"]
    assert own and len(pooled) == len(own)
    for a, b in zip(own, pooled, strict=True):
        assert float(b["time_frames"]) == pytest.approx(float(a["time_s"]) / dt)
        assert float(b["duration_frames"]) == pytest.approx(float(a["duration_s"]) / dt)
    feats = {r["roi"]: r for r in _rows(root / "features.csv") if r["session"] == "230404_5"}
    own_f = _rows(root / "04-04-23" / "230404_5" / "230404_5_features.csv")
    assert own_f and len(feats) == len(own_f)
    for r in own_f:
        assert float(feats[r["roi"]]["rate_per_60_frames"]) == pytest.approx(
            float(r["rate_per_min"]) * dt)
    times = {}
    for r in _rows(root / "results_long.csv"):
        times.setdefault(r["session"], {})[int(r["frame"])] = float(r["time_frames"])
    # block 3 of 10 recorded frames (the default) spans frames 30-39: centre 34.5
    assert times["230404_5"][3] == pytest.approx(34.5) and times["230405_8"][3] == 34.5
    record = json.loads((root / "run_record.json").read_text())
    assert record["finished"] and record["started"] <= record["finished"]
    cached = [step["cached"] for sess in record["sessions"].values() for step in sess.values()]
    assert any(cached), "the steps the killed run completed were not redone"


def test_a_rerun_with_nothing_changed_reuses_every_notebook(e2e, tmp_path, capsys):
    """Re-run the shared run into a copy of its output: no notebook is executed again,
    every table is byte-identical, and the statuses say the work was done before."""
    out = tmp_path / "out"
    shutil.copytree(e2e.out, out)
    before = tree_digest(out)
    code = main(["run", str(e2e.experiment), str(e2e.other), "--out", str(out),
                 *e2e.options])
    assert code == e2e.code
    text = capsys.readouterr().out
    assert "Open first: " in text
    after = tree_digest(out)
    changed = {p for p in after if after[p] != before.get(p)}
    assert all(p.endswith(("run_record.json", ".csv")) for p in changed), changed
    for path in changed:  # only the status tables (now "cached") and the run record
        assert "/status/" in f"/{path}" or path.endswith("run_record.json"), path
    for name in ("load", "rois", "arpls", "analysis"):
        rows = _rows(out / e2e.experiment.name / "status" / f"{name}.csv")
        assert rows and all(r["cached"] == "True" for r in rows), name
    # an output deleted since: its notebook runs again and only that work is redone
    (out / e2e.experiment.name / "results_norm.csv").unlink()
    (out / e2e.experiment.name / "04-04-23" / "230404_5" / "230404_5_features.csv").unlink()
    assert main(["run", str(e2e.experiment), "--out", str(out), *e2e.options]) == 0
    for name in ("results_norm.csv", "04-04-23/230404_5/230404_5_features.csv"):
        assert (out / e2e.experiment.name / name).read_bytes() == \
            (e2e.out / e2e.experiment.name / name).read_bytes(), name
    analysis = {r["session"]: r["cached"]
                for r in _rows(out / e2e.experiment.name / "status" / "analysis.csv")}
    assert analysis.pop("04-04-23_230404_5") == "False"
    assert set(analysis.values()) == {"True"}
    # a changed parameter changes every notebook's fingerprint (the steps it does not
    # touch are then cached by their own markers: test_workflow's re-run test)
    from calim_helpers.params import load_params
    from calim_helpers.workflow.papermill import notebook_fingerprint

    p, q = load_params(), load_params(None, [("events.threshold", "3.5")])
    r = load_params(None, [("compute.workers", "1")])  # where the work runs: no change
    for name in NOTEBOOKS:
        assert notebook_fingerprint(name, p, []) != notebook_fingerprint(name, q, [])
        assert notebook_fingerprint(name, p, []) == notebook_fingerprint(name, r, [])
        assert notebook_fingerprint(name, p, []) != notebook_fingerprint(name, p, [["x"]])
