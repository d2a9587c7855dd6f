"""An overnight batch on an untidy experiment: every session that can be processed is,
and the others are named.

OTHER of the shared run (conftest.py, made untidy by tests/_untidy.py) has a ROI set
with a measurement line and a ROI half outside the frame, a Fiji MAX projection beside
a stack, Micro-Manager 2.0 file names, a plain ImageJ TIFF that carries its own frame
interval and pixel size, and a movie too short for the default binning. A session
whose frame interval is unknown is checked in test_cli's killed-run test.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import roifile

from calim_helpers import io

GOOD = ("04-04-23_230404_5", "04-04-23_230404_9", "05-04-23_230405_2")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_every_session_that_can_be_processed_is(e2e):
    assert e2e.code == 0, e2e.stdout + e2e.stderr
    assert "Traceback" not in e2e.stdout + e2e.stderr
    root = e2e.out / e2e.other.name
    done = {r["session"]: r["status"] for r in _rows(root / "status" / "analysis.csv")}
    for s in GOOD:
        assert done[s] == "ok", (s, done)
        date, name = s.split("_", 1)
        assert (root / date / name / f"{name}_features.csv").exists()
    cells = _rows(root / "results_norm.csv")[0].keys()
    for s in GOOD:
        assert any(c.startswith(s) for c in cells), s


def test_the_short_movie_is_named_with_the_minimum(e2e):
    short = f"05-04-23_{e2e.untidy['short']}"
    assert (f"{e2e.other.name}/{short} is left out, movie too short: 20 frames, 2 after "
            "downsampling; at least 3 are needed, i.e. >= 30 native frames at "
            "downsample.time = 10") in e2e.stderr
    load = {r["session"]: r for r in _rows(e2e.out / e2e.other.name / "status" / "load.csv")}
    assert load[short]["status"] == "skipped"
    assert "20 frames, 2 after downsampling" in load[short]["reason"]
    assert f"skipped: {e2e.other.name} {short} at step 'load'" in e2e.stdout


def test_the_line_is_left_out_with_a_warning_and_the_half_outside_roi_kept(e2e):
    n_area = len(roifile.roiread(e2e.untidy["roi_zip"])) - 1  # all but the line
    assert "measurement-line" in e2e.stdout  # the run's warnings name it
    folder = e2e.out / e2e.other.name / "04-04-23" / "230404_5"
    names = io.open_store(folder / "230404_5_result.zarr")["roi_name"].values.tolist()
    assert "measurement-line" not in names and "half-outside" in names
    assert len(names) == n_area
    record = json.loads((e2e.out / e2e.other.name / "run_record.json").read_text())
    assert any("measurement-line" in str(w) for w in record["warnings"])


def test_the_projection_is_ignored_with_a_note(e2e):
    assert "MAX_230404_5_MMStack_Pos0.ome.tif: ignored, a maximum-intensity" in e2e.stdout
    shifts = _rows(e2e.out / e2e.other.name / "04-04-23" / "230404_5" / "shifts.csv")
    assert len(shifts) == 200  # the stack was read, not the projection


def test_a_plain_imagej_tiff_gives_its_interval_and_pixel_size(e2e):
    folder = e2e.out / e2e.other.name / "05-04-23" / "230405_2"
    attrs = io.open_store(folder / "230405_2_result.zarr").attrs
    assert attrs["frame_interval_s_downsampled"] == pytest.approx(1.0)  # 10 x 100 ms
    assert "rate_per_min" in (folder / "230405_2_features.csv").read_text().splitlines()[0]
    movie = io.open_movie(folder / "230405_2_corrected.ome.tif")
    assert movie.attrs["pixel_size_um"] == pytest.approx(1.3)  # 2 x 0.65 µm
