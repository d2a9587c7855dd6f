"""calim_helpers.nwb: one NWB file per session, read back with pynwb and checked by
nwbinspector (the checks DANDI runs)."""

from __future__ import annotations

import datetime as dt
import json
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from nwbinspector import Importance, inspect_nwbfile, load_config
from pynwb import NWBHDF5IO

from calim_helpers import nwb as nwbmod
from calim_helpers.errors import CalimWarning

N_ROI, N_NATIVE, SHAPE, TBIN = 3, 20, (16, 20), 2
DT = 0.1  # native frame interval (s)
START = "2023-04-04 10:12:31.123 +0200"

FULL_NWB = {
    "subject_id": "culture-{session}",
    "species": "Rattus norvegicus",
    "sex": "U",
    "age": "P14D",
    "subject_description": "primary hippocampal culture, 14 days in vitro",
    "lab": "Imaging lab",
    "institution": "Some University",
    "experimenter": "Doe, Jane",
    "indicator": "GCaMP6f",
    "location": "hippocampal culture",
    "excitation_lambda_nm": 488.0,
    "emission_lambda_nm": 510.0,
    "pharmacology": "DNQX 10 uM",
}
PARAMS = {"arpls": {"lam": 10.0, "tol": 1e-5}, "normalize": "dff", "downsample": {"time": TBIN}}
BAD = (Importance.CRITICAL, Importance.ERROR, Importance.PYNWB_VALIDATION)


def _masks() -> np.ndarray:
    masks = np.zeros((N_ROI, *SHAPE), bool)
    masks[0, 2:6, 3:8] = True
    masks[1, 4:9, 6:10] = True  # overlaps ROI 1: the label image would lose pixels
    masks[2, 10:14, 12:18] = True
    return masks


def _session(*, start: str | None = START, normalize: str = "dff"):
    """Synthetic load / traces / result stores and events of one session."""
    rng = np.random.default_rng(0)
    n_down = N_NATIVE // TBIN
    metadata = {"Prefix": "230404_5", "Frames": N_NATIVE, "MicroManagerVersion": "2.0.1",
                "ChNames": ["GFP"], "Interval_ms": DT * 1000, "PixelSize_um": 0.65}
    if start is not None:
        metadata["StartTime"] = start
    attrs = {"experiment": "GLUT_DNQX", "date": "04-04-23", "session": "230404_5",
             "native_shape": [N_NATIVE, *SHAPE], "pixel_size_um": 0.65,
             "frame_interval_s": DT, "frame_interval_s_downsampled": DT * TBIN,
             "acquisition_metadata": json.dumps(metadata),
             "source_files": ["/data/230404_5_MMStack_Pos0.ome.tif"]}
    native_time = np.arange(N_NATIVE) * DT
    time_s = native_time.reshape(n_down, TBIN).mean(axis=1)
    shifts = rng.normal(0, 0.5, (N_NATIVE, 2))
    load = xr.Dataset(
        {"movie": (("time", "y", "x"), rng.random((n_down, 8, 10), dtype=np.float32)),
         "mip": (("row", "col"), rng.random(SHAPE, dtype=np.float32)),
         "shifts": (("native_time", "axis"), shifts),
         "bad_frame": ("native_time", np.arange(N_NATIVE) == 7)},
        coords={"native_time": native_time, "axis": ["dy", "dx"], "time": time_s},
        attrs=attrs)
    rois = np.arange(1, N_ROI + 1)
    names = np.array(["0066-0106", "0120-0040", "cell 3"])
    raw = 100 + rng.random((N_ROI, n_down), dtype=np.float32) * 10
    background = 50 + rng.random(n_down, dtype=np.float32)
    labels = np.zeros(SHAPE, np.int32)
    for i, m in enumerate(_masks(), start=1):
        labels[m] = i
    traces = xr.Dataset(
        {"raw": (("roi", "time"), raw), "background": ("time", background),
         "labels": (("row", "col"), labels)},
        coords={"roi": rois, "roi_name": ("roi", names), "time": time_s},
        attrs={**attrs, "roi_source": "expert", "roi_file": "/data/ROIs/ROIs.zip",
               "n_background_pixels": 8, "seed": 0})
    signal = raw - background
    baseline = np.full_like(signal, 45.0)
    corrected = signal - baseline
    baseline_raw = np.full_like(raw, 95.0)
    norm = (corrected / baseline_raw).astype(np.float32)
    result = xr.Dataset(
        {"raw": (("roi", "time"), raw), "background": ("time", background),
         "signal": (("roi", "time"), signal), "baseline": (("roi", "time"), baseline),
         "corrected": (("roi", "time"), corrected),
         "baseline_raw": (("roi", "time"), baseline_raw),
         "dff": (("roi", "time"), norm), "dff_raw": (("roi", "time"), norm),
         "norm": (("roi", "time"), norm)},
        coords={"roi": rois, "roi_name": ("roi", names), "time": time_s,
                "frame": ("time", np.arange(n_down))},
        attrs={**attrs, "normalize": normalize, "lam": 10.0, "cutoff_s": 3.2,
               "roi_source": "expert", "n_background_pixels": 8, "seed": 0})
    events = pd.DataFrame({
        "experiment": "GLUT_DNQX", "date": "04-04-23", "session": "230404_5",
        "roi": [1, 1, 3], "roi_name": ["0066-0106", "0066-0106", "cell 3"],
        "frame": [2, 6, 4], "time_s": time_s[[2, 6, 4]], "peak_frame": [3, 6, 5],
        "peak_time_s": time_s[[3, 6, 5]], "end_frame": [5, 8, 7],
        "peak_dff": [0.3, 0.2, 0.5], "amplitude": [0.25, 0.18, 0.45],
        "duration_s": [0.6, 0.4, 0.6], "snr": [12.0, 8.5, 20.1]})
    return load, traces, result, events


def _build(nwb=None, *, params=PARAMS, **kw):
    load, traces, result, events = _session(**kw)
    return nwbmod.session_nwbfile(load, traces, result, events=events, masks=_masks(),
                                  nwb=FULL_NWB if nwb is None else nwb, params=params,
                                  version="0.2.0")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    path = tmp_path_factory.mktemp("nwb") / "230404_5.nwb"
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalimWarning)  # complete metadata: no warning
        nwbfile = _build()
    return nwbmod.write_nwb(nwbfile, path)


def _inspect(path, **kw):
    return [m for m in inspect_nwbfile(nwbfile_path=str(path), **kw) if m is not None]


# ----------------------------------------------------------------------------- contents


def test_rois_masks_names_and_source_round_trip(written):
    with NWBHDF5IO(str(written), "r") as io:
        f = io.read()
        ps = f.processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]
        assert ps.id[:].tolist() == [1, 2, 3]
        stored = np.asarray(ps["image_mask"].data[:])
        assert stored.shape == (N_ROI, SHAPE[1], SHAPE[0])  # NWB (x, y)
        np.testing.assert_array_equal(stored.transpose(0, 2, 1).astype(bool), _masks())
        assert list(ps["roi_name"].data[:]) == ["0066-0106", "0120-0040", "cell 3"]
        assert set(ps["roi_source"].data[:]) == {"expert"}
        plane = ps.imaging_plane
        assert plane.imaging_rate == pytest.approx(1 / DT)
        np.testing.assert_allclose(plane.grid_spacing[:], [0.65e-6, 0.65e-6])
        assert plane.grid_spacing_unit == "meters"
        assert plane.indicator == "GCaMP6f"
        mip = f.processing["ophys"]["summary_images"]["mip"].data[:]
        np.testing.assert_array_equal(mip.T, _session()[0]["mip"].values)


def test_traces_are_time_by_roi_at_the_downsampled_rate(written):
    _, _, result, _ = _session()
    with NWBHDF5IO(str(written), "r") as io:
        ophys = io.read().processing["ophys"]
        pairs = [(ophys["Fluorescence"]["raw"], "raw"),
                 (ophys["Fluorescence"]["corrected"], "corrected"),
                 (ophys["DfOverF"]["norm"], "norm")]
        for series, var in pairs:
            assert series.data.shape == (result.sizes["time"], N_ROI)
            np.testing.assert_array_equal(series.data[:], result[var].values.T)
            assert series.rate == pytest.approx(1 / result.attrs["frame_interval_s_downsampled"])
            assert series.starting_time == pytest.approx(result["time"].values[0])
            assert series.rois.data[:].tolist() == [0, 1, 2]
        assert "dff" in ophys["DfOverF"]["norm"].description
        assert ophys["DfOverF"]["norm"].unit == "dF/F"
        bg = ophys["background"]
        np.testing.assert_array_equal(bg.data[:], result["background"].values)
        assert bg.rate == pytest.approx(1 / (DT * TBIN))


def test_events_table_rows_equal_the_events(written):
    _, _, _, events = _session()
    with NWBHDF5IO(str(written), "r") as io:
        table = io.read().processing["ophys"]["events"].to_dataframe(index=True)
        for col in nwbmod.EVENT_COLUMNS:
            np.testing.assert_array_equal(table[col].to_numpy(), events[col].to_numpy())
        assert table["roi_row"].tolist() == [0, 0, 2]


def test_shifts_and_bad_frames_at_the_native_rate(written):
    load = _session()[0]
    with NWBHDF5IO(str(written), "r") as io:
        ophys = io.read().processing["ophys"]
        shifts = ophys["motion_correction_shifts"]
        np.testing.assert_array_equal(shifts.data[:], load["shifts"].values)
        assert shifts.rate == pytest.approx(1 / DT) and shifts.unit == "pixels"
        assert "dy" in shifts.description and "MotionCorrection" in shifts.description
        np.testing.assert_array_equal(ophys["motion_correction_bad_frame"].data[:],
                                      load["bad_frame"].values)


def test_explicit_shifts_replace_the_stored_ones():
    load, traces, result, events = _session()
    mine = xr.DataArray(np.ones((N_NATIVE, 2)), dims=("time", "axis"),
                        coords={"axis": ["dy", "dx"]})
    f = nwbmod.session_nwbfile(load.drop_vars(["shifts", "bad_frame"]), traces, result,
                               events=events, masks=_masks(), shifts=mine, nwb=FULL_NWB,
                               params=PARAMS, version="0.2.0")
    ophys = f.processing["ophys"]
    np.testing.assert_array_equal(ophys["motion_correction_shifts"].data, 1.0)
    assert "motion_correction_bad_frame" not in ophys.data_interfaces
    f = nwbmod.session_nwbfile(load.drop_vars(["shifts", "bad_frame"]), traces, result,
                               events=events, masks=_masks(), nwb=FULL_NWB, params=PARAMS,
                               version="0.2.0")
    assert "motion_correction_shifts" not in f.processing["ophys"].data_interfaces


def test_general_metadata(written):
    with NWBHDF5IO(str(written), "r") as io:
        f = io.read()
        assert f.session_start_time == dt.datetime(
            2023, 4, 4, 10, 12, 31, 123000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
        for word in ("GLUT_DNQX", "04-04-23", "230404_5"):
            assert word in f.session_description
        notes = json.loads(f.notes)
        assert notes["calim_version"] == "0.2.0"
        assert notes["parameters"] == PARAMS
        assert notes["processing"]["normalize"] == "dff"
        assert f.subject.subject_id == "culture-230404_5"
        assert f.subject.species == "Rattus norvegicus"
        assert list(f.experimenter) == ["Doe, Jane"]
        assert f.institution == "Some University"
        assert f.pharmacology == "DNQX 10 uM"
        assert [list(x) for x in f.was_generated_by] == [["CALIM", "0.2.0"]]
        assert f.identifier == nwbmod.session_identifier("GLUT_DNQX", "04-04-23", "230404_5",
                                                         PARAMS)


def test_optional_keys_and_strict_json_notes():
    f = _build(nwb={**FULL_NWB, "device_model": "ORCA-Flash4.0", "device_manufacturer":
                    "Hamamatsu", "keywords": ["calcium"], "weight": "20 g"},
               params={"lam": float("nan"), "factors": (10, 2), "arr": np.arange(2)})
    (device,) = f.devices.values()
    assert device.model.manufacturer == "Hamamatsu" and device.model.name == "ORCA-Flash4.0"
    assert list(f.keywords) == ["calcium"] and f.subject.weight == "20 g"
    assert "NaN" not in f.notes
    assert json.loads(f.notes)["parameters"] == {"lam": None, "factors": [10, 2], "arr": [0, 1]}
    with pytest.raises(ValueError, match="subject_id may use"):
        _build(nwb={**FULL_NWB, "subject_id": "{animal}"})


def test_nwbinspector_finds_nothing_critical(written):
    messages = _inspect(written)
    assert not [m for m in messages if m.importance in BAD], messages
    dandi = _inspect(written, config=load_config("dandi"))
    assert not [m for m in dandi if m.importance in BAD], dandi


def test_placeholders_warn_once_and_pass_the_inspector(tmp_path):
    with pytest.warns(CalimWarning, match="NWB file: subject_id, species") as record:
        f = _build(nwb={})
    assert len([w for w in record if "placeholders written" in str(w.message)]) == 1
    message = str(record[0].message)
    assert "indicator" in message and "nwb: parameter section" in message
    assert f.subject.sex == "U" and f.subject.age == "P0D/"
    path = nwbmod.write_nwb(f, tmp_path / "placeholders.nwb")
    assert not [m for m in _inspect(path) if m.importance in BAD]
    # DANDI's own configuration still refuses the placeholder species: fill it in first.
    critical = [m.check_function_name for m in _inspect(path, config=load_config("dandi"))
                if m.importance == Importance.CRITICAL]
    assert critical == ["check_subject_species_form"]


def test_empty_events_and_other_normalizations(tmp_path):
    load, traces, result, events = _session(normalize="zscore")
    f = nwbmod.session_nwbfile(load, traces, result, events=events.iloc[:0], masks=_masks(),
                               nwb=FULL_NWB, params=PARAMS, version="0.2.0")
    path = nwbmod.write_nwb(f, tmp_path / "empty.nwb")
    with NWBHDF5IO(str(path), "r") as io:
        g = io.read()
        assert "events" not in g.processing["ophys"].data_interfaces
        assert json.loads(g.notes)["n_events"] == 0
        assert "zscore" in g.processing["ophys"]["DfOverF"]["norm"].description
    assert not [m for m in _inspect(path) if m.importance in BAD]


# ----------------------------------------------------------------------------- identifier


def test_same_inputs_same_identifier():
    a, b = _build(), _build()
    assert a.identifier == b.identifier
    assert a.identifier.startswith("GLUT_DNQX_04-04-23_230404_5_calim-")
    other = _build(params={**PARAMS, "normalize": "zscore"})
    assert other.identifier != a.identifier


# ----------------------------------------------------------------------------- start time


def test_start_time_with_zone():
    when, how = nwbmod.parse_start_time({"StartTime": START})
    assert when == dt.datetime(2023, 4, 4, 8, 12, 31, 123000, tzinfo=dt.UTC)
    assert when.utcoffset() == dt.timedelta(hours=2)
    assert how == "Micro-Manager StartTime"
    for text, offset in (("2023-04-04 10:12:31 -0500", -5), ("2023-04-04T10:12:31+02:00", 2),
                         ("2023-04-04T10:12:31.5Z", 0)):
        assert nwbmod.parse_start_time({"StartTime": text})[0].utcoffset() == \
            dt.timedelta(hours=offset)


def test_start_time_without_zone_uses_the_local_zone():
    when, how = nwbmod.parse_start_time(json.dumps({"StartTime": "2023-04-04 10:12:31.123"}))
    assert when.replace(tzinfo=None) == dt.datetime(2023, 4, 4, 10, 12, 31, 123000)
    local = dt.datetime(2023, 4, 4, 10, 12, 31).astimezone().utcoffset()
    assert when.utcoffset() == local
    assert "local zone" in how
    f = _build(start="2023-04-04 10:12:31")
    assert "local zone" in f.session_description
    assert "local zone" in json.loads(f.notes)["session_start_time_source"]


def test_start_time_from_micro_manager_1_4_time_and_whole_metadata_file():
    java = {"Summary": {"Time": "Tue Apr 04 10:12:31 CEST 2023"}}
    when, how = nwbmod.parse_start_time(java)
    assert when.replace(tzinfo=None) == dt.datetime(2023, 4, 4, 10, 12, 31)
    assert "'CEST'" in how and "local zone" in how
    gmt = nwbmod.parse_start_time({"Time": "Tue Apr 04 10:12:31 GMT 2023"})[0]
    assert gmt == dt.datetime(2023, 4, 4, 10, 12, 31, tzinfo=dt.UTC)


def test_no_start_time_uses_the_date_folder_and_warns():
    with pytest.warns(CalimWarning, match="date folder 04-04-23"):
        when, how = nwbmod.parse_start_time("{}", date="04-04-23")
    assert when.replace(tzinfo=None) == dt.datetime(2023, 4, 4)
    assert when.tzinfo is not None and "date folder" in how
    with pytest.warns(CalimWarning, match="date folder"):
        f = _build(start=None)
    assert f.session_start_time.date() == dt.date(2023, 4, 4)
    with pytest.raises(ValueError, match="no date folder"):
        nwbmod.parse_start_time("not json")
    with pytest.raises(ValueError, match="dd-mm-yy"):
        nwbmod.parse_start_time({}, date="2023-04-04")


# ----------------------------------------------------------------------------- input checks


def test_inputs_are_checked_up_front():
    load, traces, result, events = _session()
    kw = {"events": events, "masks": _masks(), "nwb": FULL_NWB, "params": PARAMS,
          "version": "0.2.0"}
    with pytest.raises(ValueError, match=r"masks must have shape \(roi, row, col\)"):
        nwbmod.session_nwbfile(load, traces, result, **{**kw, "masks": _masks()[:2]})
    with pytest.raises(ValueError, match="masks must be boolean"):
        nwbmod.session_nwbfile(load, traces, result, **{**kw, "masks": _masks().astype(int)})
    with pytest.raises(ValueError, match="events lacks"):
        nwbmod.session_nwbfile(load, traces, result, **{**kw, "events": events.drop(
            columns="snr")})
    with pytest.raises(ValueError, match=r"ROI\(s\) \[7\]"):
        nwbmod.session_nwbfile(load, traces, result, **{**kw, "events": events.assign(roi=7)})
    with pytest.raises(ValueError, match="unknown key"):
        nwbmod.session_nwbfile(load, traces, result, **{**kw, "nwb": {"specie": "x"}})
    with pytest.raises(ValueError, match="frame_interval_s_downsampled"):
        bad = load.assign_attrs(frame_interval_s_downsampled=float("nan"))
        nwbmod.session_nwbfile(bad, traces, result, **kw)
    with pytest.raises(ValueError, match="same ROIs"):
        nwbmod.session_nwbfile(load, traces.isel(roi=[0, 1]), result, **kw)


def test_inputs_are_not_modified():
    load, traces, result, events = _session()
    masks = _masks()
    masks.setflags(write=False)
    before = (load.copy(deep=True), result.copy(deep=True), events.copy())
    nwbmod.session_nwbfile(load, traces, result, events=events, masks=masks, nwb=FULL_NWB,
                           params=PARAMS, version="0.2.0")
    xr.testing.assert_identical(load, before[0])
    xr.testing.assert_identical(result, before[1])
    pd.testing.assert_frame_equal(events, before[2])


# ----------------------------------------------------------------------------- writing


def test_write_nwb_is_atomic_and_replaces(tmp_path):
    path = tmp_path / "sub" / "s.nwb"
    assert nwbmod.write_nwb(_build(), path) == path
    first = path.stat().st_mtime_ns
    time.sleep(0.01)
    nwbmod.write_nwb(_build(), path)
    assert path.stat().st_mtime_ns != first
    assert sorted(p.name for p in path.parent.iterdir()) == ["s.nwb"]

    class Broken:  # pynwb refuses it: the temporary file must not stay behind
        pass

    with pytest.raises(Exception):  # noqa: B017 - whatever pynwb raises
        nwbmod.write_nwb(Broken(), tmp_path / "sub" / "t.nwb")
    assert sorted(p.name for p in path.parent.iterdir()) == ["s.nwb"]


# ----------------------------------------------------------------------------- a real run


def test_a_real_pipeline_run_converts_and_passes_the_inspector(tmp_path):
    from calim_helpers import demo, params, rois
    from calim_helpers.workflow import runner
    from calim_helpers.workflow.experiment import Experiment

    exp_dir = demo.write_demo_experiment(tmp_path / "data", n_frames=100, frame_shape=(40, 48),
                                         seed=2)
    p = params.defaults()
    p["figures"]["per_roi"] = False
    exp = Experiment.open(exp_dir, tmp_path / "out", ["230404_5"])
    steps = {"load": ("load", "registration", "denoise", "downsample", "figures", "outputs"),
             "rois": ("rois", "detection", "background", "neuropil", "figures"),
             "arpls": ("arpls", "normalize", "trim_start", "figures"),
             "analysis": ("events", "synchrony", "qc", "heatmap", "figures", "outputs", "nwb")}
    for step, sections in steps.items():
        status = runner.run_step(step, exp, compute=p["compute"],
                                 **{k: p[k] for k in sections})
        assert status["status"].tolist() == ["ok"], status
    (session,) = exp.sessions
    load, traces, result = (exp.open_store(session, k) for k in ("load", "traces", "result"))
    events = pd.read_csv(exp.file(session, "events.csv"))
    shape = tuple(load.attrs["native_shape"][1:])
    masks = np.stack([rois.rasterize(r, shape) for r in rois.read_rois(traces.attrs["roi_file"])])
    path = exp.session_dir(session) / f"{session.name}.nwb"  # written by the analysis step
    warned = status["warnings"].iloc[0]  # the nwb section is empty: placeholders, one warning
    assert "species" in warned and "start time" not in warned, warned
    assert not [m for m in _inspect(path) if m.importance in BAD]
    with NWBHDF5IO(str(path), "r") as io:
        g = io.read()
        ophys = g.processing["ophys"]
        # the demo writes StartTime "2023-04-04 09:35:00.000 +0200" for 04-04-23/230404_5
        assert g.session_start_time == dt.datetime(2023, 4, 4, 9, 35, tzinfo=dt.timezone(
            dt.timedelta(hours=2)))
        ps = ophys["ImageSegmentation"]["PlaneSegmentation"]
        assert len(ps) == result.sizes["roi"] > 0
        np.testing.assert_array_equal(ps["image_mask"].data[:].transpose(0, 2, 1).astype(bool),
                                      masks)
        np.testing.assert_allclose(ophys["DfOverF"]["norm"].data[:], result["norm"].values.T)
        assert len(ophys["events"]) == len(events)
        assert ophys["motion_correction_shifts"].data.shape == (load.sizes["native_time"], 2)


def test_every_session_of_a_calim_run_has_its_nwb_file(e2e):
    """The shared end-to-end run (nwb.species set, as a lab sharing on DANDI would)."""
    dandi = load_config("dandi")
    results = sorted(e2e.root.glob("*/*/*_result.zarr"))
    assert len(results) == 4
    for res in results:
        result = xr.open_zarr(res)
        path = res.parent / f"{res.parent.name}.nwb"
        with NWBHDF5IO(str(path), "r") as io:
            f = io.read()
            ophys = f.processing["ophys"]
            ps = ophys["ImageSegmentation"]["PlaneSegmentation"]
            assert len(ps) == result.sizes["roi"]
            assert ps["roi_name"].data[:].tolist() == result["roi_name"].values.tolist()
            shape = (result.sizes["time"], result.sizes["roi"])
            for series in (ophys["Fluorescence"]["raw"], ophys["Fluorescence"]["corrected"],
                           ophys["DfOverF"]["norm"]):
                assert series.data.shape == shape
                assert series.rate == pytest.approx(
                    1 / result.attrs["frame_interval_s_downsampled"])
            np.testing.assert_allclose(ophys["DfOverF"]["norm"].data[:],
                                       result["norm"].values.T)
            assert f.subject.species == "Mus musculus"
        assert not [m for m in _inspect(path, config=dandi) if m.importance in BAD]


def test_the_corrected_movie_is_linked_not_copied(tmp_path):
    from calim_helpers import io

    load, traces, result, events = _session()
    movie = tmp_path / "230404_5_corrected.ome.tif"
    io.write_movie(load["movie"], movie, pixel_size_um=(1.3, 1.3), frame_interval_s=1.0)
    f = nwbmod.session_nwbfile(load, traces, result, events=events, masks=_masks(),
                               nwb=FULL_NWB, params=PARAMS, version="0.2.0",
                               movie_file=movie.name)
    path = nwbmod.write_nwb(f, tmp_path / "230404_5.nwb")
    with NWBHDF5IO(str(path), "r") as nwb_io:
        series = nwb_io.read().processing["ophys"]["corrected_movie"]
        assert list(series.external_file[:]) == [movie.name]
        assert series.data.size == 0  # linked, no copy of the pixels
        assert series.rate == pytest.approx(1 / result.attrs["frame_interval_s_downsampled"])
    assert not [m for m in _inspect(path) if m.importance in BAD]


def test_a_native_corrected_movie_is_linked_at_the_native_rate(tmp_path):
    load, traces, result, events = _session()
    load.attrs["movie_output"] = "native"
    f = nwbmod.session_nwbfile(load, traces, result, events=events, masks=_masks(),
                               nwb=FULL_NWB, params=PARAMS, version="0.2.0",
                               movie_file="230404_5_corrected.ome.tif")
    series = f.processing["ophys"]["corrected_movie"]
    assert series.num_samples == load.attrs["native_shape"][0]
    assert series.rate == pytest.approx(1 / load.attrs["frame_interval_s"])
    assert "recording's resolution" in series.description
