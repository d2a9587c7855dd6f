"""Tests of calim_helpers.workflow: steps, fan-out, and what a whole run recovers.

The ground-truth tests read the shared end-to-end run (``e2e`` in conftest.py): the
default demo experiment through ``calim run`` with every default.
"""

from __future__ import annotations

import re
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from calim_helpers import demo, detection, io, plots, rois
from calim_helpers.errors import CalimInputError, CalimWarning
from calim_helpers.noise import noise_sigma
from calim_helpers.params import load_params
from calim_helpers.workflow import Experiment, run_step, steps
from calim_helpers.workflow.record import experiment_warnings
from calim_helpers.workflow.runner import clear_from


def _truth(truth_dir, s):
    return np.load(truth_dir / s.date / s.name / "truth.npz")


def _binned(truth, n_t, k=10):
    return truth["dff"][:, : n_t * k].reshape(truth["dff"].shape[0], n_t, k).mean(-1)


@pytest.fixture(scope="module")
def run(e2e):
    assert e2e.code == 0
    return Experiment.open(e2e.experiment, e2e.out), e2e.truth


def test_unknown_session_is_named(tmp_path):
    exp = demo.write_demo_experiment(tmp_path, n_frames=20, frame_shape=(32, 40), seed=1)
    with pytest.raises(CalimInputError, match=r"no session 230499_1 \(known: 04-04-23_230404_5"):
        Experiment.open(exp, tmp_path / "out", ["230499_1"])
    e = Experiment.open(exp, tmp_path / "out", ["230405_2", "04-04-23_230404_5"])
    assert [s.id for s in e.sessions] == ["04-04-23_230404_5", "05-04-23_230405_2"]
    assert e.session("230405_2").id == "05-04-23_230405_2"
    with pytest.raises(CalimInputError, match="no selected session '230404_9'"):
        e.session("230404_9")


def test_roi_file_names_sort_in_roi_order():
    names = steps.roi_file_names("230404_5", list(range(1, 13)))
    firsts = [names[n][0] for n in range(1, 13)]
    assert sorted(firsts) == firsts
    assert names[3] == ("230404_5_mask03.png", "230404_5_mask_arpls_clean_03.png",
                        "230404_5_mask_arpls_NORM_03.png")
    assert steps.roi_file_names("s", [1, 2])[2][0] == "s_mask2.png"


def test_normalized_traces_recover_the_true_dff(run):
    e, truth_dir = run
    r_norm, r_raw = [], []
    for s in e.sessions:
        ds = e.open_store(s, "result").load()
        truth = _truth(truth_dir, s)
        true = _binned(truth, ds.sizes["time"])
        for i, neuron in enumerate(truth["roi_neuron"]):
            r_norm.append(np.corrcoef(ds["norm"].values[i], true[neuron])[0, 1])
            r_raw.append(np.corrcoef(ds["raw"].values[i], true[neuron])[0, 1])
    assert len(r_norm) >= 30
    assert np.median(r_norm) >= 0.95, np.median(r_norm)
    assert np.median(r_norm) > np.median(r_raw) + 0.2, (np.median(r_norm), np.median(r_raw))


def test_background_pixels_lie_outside_every_roi(run):
    e, _ = run
    for s in e.sessions:
        tr = e.open_store(s, "traces").load()
        labels = tr["labels"].values
        fy, fx = 2, 2
        for y, x in zip(tr["background_y"].values, tr["background_x"].values, strict=True):
            assert not labels[y * fy:(y + 1) * fy, x * fx:(x + 1) * fx].any()
        n_grid = (labels.shape[0] // 2) * (labels.shape[1] // 2)
        assert tr.attrs["n_background_pixels"] == round(0.10 * n_grid)


def test_motion_correction_recovers_the_true_shifts(run):
    e, truth_dir = run
    moved = 0
    for s in e.sessions:
        est = pd.read_csv(e.session_dir(s) / "shifts.csv")
        true = _truth(truth_dir, s)["shifts"]
        diff = est[["dy", "dx"]].to_numpy() + true  # the correction is minus the motion
        diff -= np.median(diff, axis=0)  # the template sits at the movie's usual position
        rms = np.sqrt(np.mean(np.sum(diff**2, axis=1)))
        assert rms < 0.1, f"{s.id}: shift error {rms:.3f} px rms"
        assert not est["bad"].any()
        moved += np.abs(true).max() > 1.5
    assert moved == 1  # the demo has one session with ~3 px of motion


def test_motion_corrected_session_correlates_like_the_others(run):
    e, truth_dir = run
    medians = {}
    for s in e.sessions:
        ds = e.open_store(s, "result").load()
        truth = _truth(truth_dir, s)
        true = _binned(truth, ds.sizes["time"])
        medians[s.name] = np.median([np.corrcoef(ds["norm"].values[i], true[n])[0, 1]
                                     for i, n in enumerate(truth["roi_neuron"])])
    still = [v for k, v in medians.items() if k != "230404_9"]
    assert medians["230404_9"] >= min(still) - 0.005, medians


def test_automatic_rois_match_the_true_footprints(run):
    from scipy import ndimage

    e, truth_dir = run
    f1 = []
    for s in e.sessions:
        footprints = _truth(truth_dir, s)["footprints"]
        true = np.stack([ndimage.binary_fill_holes(f > 0.5 * f.max()) for f in footprints])
        auto = rois.label_image(rois.read_rois(e.session_dir(s) / "ROIs_auto.zip"),
                                footprints.shape[1:])
        f1.append(detection.match_rois(auto, true, iou_threshold=0.5)["f1"])
    assert min(f1) >= 0.85 and np.mean(f1) >= 0.9, f1
    status = pd.read_csv(e.root / "status" / "rois.csv")
    assert (status["roi_source"] == "expert").all()  # expert ROIs exist: used, and compared
    assert (status["auto_vs_expert_f1"] >= 0.85).all()


def _transients(spike_times, gap_s=1.5):
    t = np.sort(spike_times)
    return [g[0] for g in np.split(t, np.flatnonzero(np.diff(t) > gap_s) + 1)] if t.size else []


def test_events_match_the_true_transients(run):
    """Event F1 >= 0.9 for true transients above 3x noise (SPEC §4).

    A true transient is a run of spikes less than 1.5 s apart; a detection matches it
    when its onset frame is within one frame of the first spike; transients whose binned
    true peak is below 3 noise sigma are neither required nor counted as false positives
    when found.
    """
    e, truth_dir = run
    events = pd.read_csv(e.root / "events.csv")
    tp = fp = fn = 0
    for s in e.sessions:
        ds = e.open_store(s, "result").load()
        truth = _truth(truth_dir, s)
        true = _binned(truth, ds.sizes["time"])
        mine = events[(events["session"] == s.name) & (events["date"] == s.date)]
        for i, neuron in enumerate(truth["roi_neuron"]):
            onsets = mine.loc[mine["roi"] == i + 1, "frame"].to_numpy()
            sigma = float(noise_sigma(ds["norm"].values[i])[0])
            used = np.zeros(onsets.size, bool)
            for t0 in _transients(truth["spike_times_s"][truth["spike_neuron"] == neuron]):
                f0 = int(t0 // 1.0)
                if f0 >= true.shape[1]:
                    continue
                d = np.abs(onsets - f0).astype(float)
                d[used] = np.inf
                j = int(np.argmin(d)) if d.size else -1
                hit = j >= 0 and d[j] <= 1
                if hit:
                    used[j] = True
                if true[neuron, f0:f0 + 3].max() > 3 * sigma:
                    tp += hit
                    fn += not hit
            fp += int((~used).sum())
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert f1 >= 0.9, (tp, fp, fn, f1)


def test_analysis_tables(run):
    e, _ = run
    ev = pd.read_csv(e.root / "events.csv")
    for col in ("experiment", "date", "session", "roi", "frame", "time_s", "peak_dff",
                "amplitude", "duration_s"):
        assert col in ev.columns
    feats = pd.read_csv(e.root / "features.csv")
    n_rois = sum(e.open_store(s, "result").sizes["roi"] for s in e.sessions)
    assert len(feats) == n_rois
    for col in ("rate_per_min", "mean_amplitude", "mean_duration_s", "participation", "snr",
                "cluster", "converged", "shift_rms_px"):
        assert col in feats.columns
    moved = feats.loc[feats["session"] == "230404_9", "shift_rms_px"]
    assert (moved > 0.3).all()
    for s in e.sessions:
        for suffix in ("raster", "correlation", "clusters", "summary", "qc", "shifts",
                       "registration"):
            assert (e.session_dir(s) / f"{s.name}_{suffix}.png").exists(), (s.id, suffix)
    assert (e.root / "sessions_summary.pdf").exists()
    tests = pd.read_csv(e.root / "sessions_tests.csv")
    assert (tests["unit"] == "cell").all()
    # the test follows the number of sessions with values: Kruskal-Wallis for 3 or 4,
    # Mann-Whitney for 2 (e.g. an amplitude where 2 sessions have no event), else none
    with_values = (tests[[c for c in tests.columns if c.startswith("n_")]] > 0).sum(axis=1)
    expected = np.select([with_values >= 3, with_values == 2], ["kruskal", "mannwhitney"],
                         "none")
    assert tests["test"].tolist() == expected.tolist()
    assert (tests["test"] == "kruskal").any()


def _quiet(p, **sections):
    return {"compute": p["compute"]} | sections


def test_auto_rois_replace_a_missing_expert_set(tmp_path):
    exp_dir = demo.write_demo_experiment(tmp_path, n_frames=200, frame_shape=(64, 80), seed=5)
    shutil.rmtree(exp_dir / "05-04-23" / "230405_2" / "Rois")
    p = load_params()
    e = Experiment.open(exp_dir, tmp_path / "out", ["230405_2"])
    figures = {"per_roi": False, "per_roi_pdf": False, "dpi": 40}
    run_step("load", e, compute=p["compute"], load=p["load"],
             registration=p["registration"] | {"enabled": False}, denoise=p["denoise"],
             downsample=p["downsample"], figures=figures, outputs=p["outputs"])
    status = run_step("rois", e, compute=p["compute"], background=p["background"],
                      figures=figures, rois=p["rois"], detection=p["detection"],
                      neuropil=p["neuropil"])
    row = status.iloc[0]
    assert row["status"] == "ok" and row["roi_source"] == "auto" and row["n_rois"] >= 3
    assert (f"05-04-23_230405_2: no ROI set; its {row['n_rois']} ROI(s) were detected "
            "automatically") in row["warnings"]
    assert (e.session_dir(e.sessions[0]) / "ROIs_auto.zip").exists()
    expert_only = run_step("rois", e, compute=p["compute"], background=p["background"],
                           figures=figures, rois={"source": "expert"}, detection=p["detection"],
                           neuropil=p["neuropil"])
    assert expert_only.iloc[0]["status"] == "skipped"
    assert not e.has(e.sessions[0], "traces")  # the earlier traces were cleared, not reused


def test_a_step_clears_what_it_and_later_steps_wrote(tmp_path):
    exp_dir = demo.write_demo_experiment(tmp_path, n_frames=20, frame_shape=(32, 40), seed=1)
    e = Experiment.open(exp_dir, tmp_path / "out", ["230404_5"])
    s = e.sessions[0]
    for kind in ("load", "traces", "result"):
        e.path(s, kind).mkdir(parents=True)
    e.file(s, "events.csv").write_text("x\n")
    folder = e.session_dir(s)
    stale = ["230404_5_rois.png", "ROIs_auto.zip", "230404_5_mask01.png",
             "230404_5_mask_arpls_NORM_01.png", "230404_5_qc.png", "230404_5.nwb",
             "230404_5_rois.pdf", ".230404_5_result.zarr.part-123"]
    kept = ["shifts.csv", "230404_5_shifts.png", "230404_5_registration.png",
            "230404_5_corrected.ome.tif"]  # the load step's
    for name in stale + kept:
        (folder / name).write_text("x")
    clear_from(e, s, "rois")
    assert e.has(s, "load") and not e.has(s, "traces") and not e.has(s, "result")
    assert not e.file(s, "events.csv").exists()
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == sorted(kept)


def test_the_native_corrected_movie_is_written_in_the_load_pass(tmp_path):
    import tifffile

    from calim_helpers import registration as reg
    from calim_helpers.downsample import downsample

    exp_dir = demo.write_demo_experiment(tmp_path, n_frames=60, frame_shape=(40, 48), seed=3,
                                         sessions=["230404_9"])  # the session with motion
    p = load_params()
    e = Experiment.open(exp_dir, tmp_path / "out")
    s = e.sessions[0]
    kw = {"compute": p["compute"], "load": p["load"] | {"chunk_time": 25},
          "registration": p["registration"] | {"template_frames": 30},
          "denoise": p["denoise"], "downsample": p["downsample"],
          "figures": {"per_roi": False, "per_roi_pdf": False, "dpi": 30}}
    assert run_step("load", e, outputs={"movie": "native"}, **kw)["status"].tolist() == ["ok"]
    path = e.file(s, "corrected.ome.tif")
    native = tifffile.imread(path)
    recording = io.open_movie(s)
    assert native.dtype == recording.dtype == np.uint16 and native.shape == recording.shape
    # the same correction computed on its own, then rounded to whole counts
    alone = reg.correct_motion(recording, **{k: v for k, v in kw["registration"].items()
                                             if k != "enabled"}).corrected.values
    np.testing.assert_array_equal(native, io.as_pixel_type(alone, np.uint16))
    # its block mean is the stored downsampled movie, to the rounding (<= 0.5 count)
    stored = e.open_store(s, "load")["movie"].values
    ours = downsample(xr.DataArray(native.astype(np.float32), dims=("time", "y", "x")),
                      p["downsample"]).values
    assert np.abs(ours - stored).max() <= 0.5 + 1e-3
    opened = io.open_movie(path)
    assert opened.attrs["pixel_size_um"] == pytest.approx(recording.attrs["pixel_size_um"])
    assert opened.attrs["frame_interval_s"] == pytest.approx(
        recording.attrs["frame_interval_s"])
    recording.close()
    opened.close()
    assert e.open_store(s, "load").attrs["movie_output"] == "native"
    # another choice re-runs the load step; none leaves no movie behind
    run_step("load", e, outputs={"movie": "downsampled"}, **kw)
    assert tifffile.imread(path).shape == stored.shape
    run_step("load", e, outputs={"movie": "none"}, **kw)
    assert not path.exists()
    assert not [f for f in e.session_dir(s).iterdir() if ".part-" in f.name]


def _run_chain(exp_dir, out, compute):
    p = load_params()
    e = Experiment.open(exp_dir, out)
    figures = {"per_roi": False, "per_roi_pdf": False, "dpi": 30}
    assert (run_step("load", e, compute=compute, load=p["load"],
                     registration=p["registration"] | {"enabled": False}, denoise=p["denoise"],
                     downsample=p["downsample"], figures=figures,
                     outputs=p["outputs"])["status"] == "ok").all()
    run_step("rois", e, compute=compute, background=p["background"], figures=figures,
             rois={"source": "expert"}, detection=p["detection"], neuropil=p["neuropil"])
    table = run_step("arpls", e, compute=compute, arpls=p["arpls"], normalize="dff",
                     trim_start=0, figures=figures)
    assert (table["status"] == "ok").all()
    return {s.id: e.open_store(s, "result").load() for s in e.sessions}


def test_parallel_sessions_and_a_dask_cluster_give_the_same_results(tmp_path):
    distributed = pytest.importorskip("distributed")  # installed with the test extra
    exp_dir = demo.write_demo_experiment(tmp_path, n_frames=100, frame_shape=(40, 48), seed=6)
    serial = _run_chain(exp_dir, tmp_path / "serial", {"scheduler": "threads", "workers": 2,
                                                       "parallel_sessions": 1, "resume": True})
    parallel = _run_chain(exp_dir, tmp_path / "parallel", {"scheduler": "threads", "workers": 2,
                                                           "parallel_sessions": 2,
                                                           "resume": True})
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        clustered = _run_chain(exp_dir, tmp_path / "cluster",
                               {"scheduler": cluster.scheduler_address,
                                "parallel_sessions": 1, "resume": True})
    for sid, ref in serial.items():
        for other in (parallel[sid], clustered[sid]):
            np.testing.assert_array_equal(other["norm"].values, ref["norm"].values)
            np.testing.assert_array_equal(other["raw"].values, ref["raw"].values)


def test_bad_compute_settings_are_named(tmp_path, monkeypatch):
    monkeypatch.setattr("calim_helpers.workflow.runner.CONNECT_TIMEOUT", "2s")
    exp_dir = demo.write_demo_experiment(tmp_path, n_frames=20, frame_shape=(32, 40), seed=1)
    e = Experiment.open(exp_dir, tmp_path / "out")
    p = load_params()
    kw = {"load": p["load"], "registration": p["registration"], "denoise": p["denoise"],
          "downsample": p["downsample"], "figures": p["figures"], "outputs": p["outputs"]}
    with pytest.raises(CalimInputError, match="compute.scheduler must be"):
        run_step("load", e, compute={"scheduler": "gpu", "workers": 1, "parallel_sessions": 1,
                                     "resume": True}, **kw)
    with pytest.raises(CalimInputError, match="no dask cluster at tcp://127.0.0.1:9"):
        run_step("load", e, compute={"scheduler": "tcp://127.0.0.1:9", "parallel_sessions": 1,
                                     "resume": True}, **kw)


def _chain(e, p, **changes):
    """Steps 1-4 on every session; returns {step: status table}."""
    p = p | changes
    figures = {"per_roi": False, "per_roi_pdf": False, "dpi": 30}
    steps_and_sections = (
        ("load", {"load": p["load"], "registration": p["registration"],
                  "denoise": p["denoise"], "downsample": p["downsample"], "figures": figures,
                  "outputs": p["outputs"]}),
        ("rois", {"rois": p["rois"], "detection": p["detection"],
                  "background": p["background"], "neuropil": p["neuropil"],
                  "figures": figures}),
        ("arpls", {"arpls": p["arpls"], "normalize": p["normalize"],
                   "trim_start": p["trim_start"], "figures": figures}),
        ("analysis", {"events": p["events"], "synchrony": p["synchrony"], "qc": p["qc"],
                      "heatmap": p["heatmap"], "figures": figures, "outputs": p["outputs"],
                      "nwb": p["nwb"]}))
    return {step: run_step(step, e, compute=p["compute"], **kw)
            for step, kw in steps_and_sections}


def test_a_rerun_skips_what_is_done_and_redoes_what_changed(tmp_path):
    exp_dir = demo.write_demo_experiment(tmp_path, n_frames=100, frame_shape=(40, 48), seed=6,
                                         sessions=["230404_5", "230405_2"])
    p = load_params()
    p["registration"] = p["registration"] | {"enabled": False}
    p["synchrony"] = p["synchrony"] | {"n_shuffles": 50}
    p["outputs"] = p["outputs"] | {"nwb": False}
    e = Experiment.open(exp_dir, tmp_path / "out")
    first = _chain(e, p)
    assert all((t["status"] == "ok").all() for t in first.values())
    assert not any(t["cached"].any() for t in first.values())
    events = {s.id: e.file(s, "events.csv").read_bytes() for s in e.sessions}
    again = _chain(e, p)
    assert all(t["cached"].all() and (t["status"] == "ok").all() for t in again.values())
    assert {s.id: e.file(s, "events.csv").read_bytes() for s in e.sessions} == events
    # a new lambda: load and rois are kept, arpls and analysis are redone
    changed = _chain(e, p, arpls=p["arpls"] | {"lam": 100.0})
    assert changed["load"]["cached"].all() and changed["rois"]["cached"].all()
    assert not changed["arpls"]["cached"].any() and not changed["analysis"]["cached"].any()
    assert e.open_store(e.sessions[0], "result").attrs["lam"] == 100.0
    # the NWB switch is part of the outputs section, but only the analysis step uses it
    nwb_on = _chain(e, p, arpls=p["arpls"] | {"lam": 100.0},
                    outputs=p["outputs"] | {"nwb": True})
    assert all(nwb_on[step]["cached"].all() for step in ("load", "rois", "arpls"))
    assert not nwb_on["analysis"]["cached"].any()
    # an input file that changed is read again, and everything after it is redone
    s = e.sessions[1]
    roi_file = s.roi_file
    roi_file.write_bytes(roi_file.read_bytes())  # same content, new modification time
    import os
    os.utime(roi_file, ns=(roi_file.stat().st_atime_ns, roi_file.stat().st_mtime_ns + 10**9))
    touched = _chain(e, p, arpls=p["arpls"] | {"lam": 100.0})
    rows = {step: t.set_index("session").loc[s.id] for step, t in touched.items()}
    assert rows["load"]["cached"] and not rows["rois"]["cached"]
    assert not rows["arpls"]["cached"] and not rows["analysis"]["cached"]
    # resume off (calim run --force): everything is computed again
    forced = _chain(e, p, compute=p["compute"] | {"resume": False})
    assert not any(t["cached"].any() for t in forced.values())


def test_a_deleted_output_is_not_taken_for_done(tmp_path):
    exp_dir = demo.write_demo_experiment(tmp_path, n_frames=40, frame_shape=(32, 40), seed=1)
    p = load_params()
    p["registration"] = p["registration"] | {"enabled": False}
    p["synchrony"] = p["synchrony"] | {"n_shuffles": 20}
    e = Experiment.open(exp_dir, tmp_path / "out", ["230404_5"])
    _chain(e, p)
    shutil.rmtree(e.path(e.sessions[0], "result"))
    again = _chain(e, p)
    assert again["rois"]["cached"].all() and not again["arpls"]["cached"].any()
    assert e.has(e.sessions[0], "result")


def test_warnings_are_recorded_in_the_status_table(tmp_path):
    exp_dir = demo.write_demo_experiment(tmp_path, n_frames=105, frame_shape=(32, 40), seed=1)
    p = load_params()
    e = Experiment.open(exp_dir, tmp_path / "out", ["230404_5"])
    table = run_step("load", e, compute=p["compute"], load=p["load"],
                     registration=p["registration"] | {"enabled": False},
                     denoise=p["denoise"], downsample=p["downsample"], figures=p["figures"],
                     outputs=p["outputs"])
    assert "dropping the last 5 of 105 time elements" in table["warnings"].iloc[0]


def test_experiment_step_warnings_are_kept_per_step_for_the_run(tmp_path):
    exp_dir = demo.write_demo_experiment(tmp_path, n_frames=20, frame_shape=(32, 40), seed=1)
    e = Experiment.open(exp_dir, tmp_path / "out")
    with pytest.warns(CalimWarning, match="first"):  # still raised where the step runs
        with steps.recording_warnings(e, "aggregate"):
            warnings.warn("first", CalimWarning, stacklevel=1)
    with pytest.warns(CalimWarning, match="other"):
        with steps.recording_warnings(e, "analysis tables"):
            warnings.warn("other", CalimWarning, stacklevel=1)
    assert experiment_warnings(e.root) == [("aggregate", "CalimWarning: first"),
                                           ("analysis tables", "CalimWarning: other")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with steps.recording_warnings(e, "aggregate"):  # a re-run replaces its own rows
            pass
    assert experiment_warnings(e.root) == [("analysis tables", "CalimWarning: other")]


def test_a_float_stack_with_nan_pixels_fails_at_load_naming_file_and_frames(tmp_path):
    from _untidy import read_stack, replace_with_tiff

    exp_dir = demo.write_demo_experiment(tmp_path, n_frames=60, frame_shape=(32, 40), seed=1)
    folder = exp_dir / "04-04-23" / "230404_5"
    stack = read_stack(next(folder.glob("*MMStack*.ome.tif"))).astype(np.float32)
    stack[[7, 8, 30], :, :3] = np.nan  # the borders a registration plugin shifted in
    replace_with_tiff(folder, stack, "registered.tif", finterval=0.1)
    p = load_params()
    e = Experiment.open(exp_dir, tmp_path / "out", ["230404_5"])
    row = run_step("load", e, compute=p["compute"], load=p["load"],
                   registration=p["registration"], denoise=p["denoise"],
                   downsample=p["downsample"], figures=p["figures"],
                   outputs=p["outputs"]).iloc[0]
    assert row["status"] == "failed"
    assert "registered.tif: 3 of 60 frames hold NaN" in row["reason"]
    assert "frames 7, 8, 30, from 0" in row["reason"]
    assert not e.has(e.sessions[0], "load")


def test_a_two_channel_session_runs_on_the_channel_chosen(tmp_path):
    from _untidy import read_stack, replace_with_tiff

    exp_dir = demo.write_demo_experiment(tmp_path, n_frames=60, frame_shape=(32, 40), seed=1)
    folder = exp_dir / "04-04-23" / "230404_5"
    calcium = read_stack(folder)
    red = np.full_like(calcium, 700)  # a structural channel: flat
    replace_with_tiff(folder, np.stack([red, calcium], axis=1), "two.tif", finterval=0.1,
                      axes="TCYX")
    p = load_params()
    kw = {"compute": p["compute"], "registration": p["registration"] | {"enabled": False},
          "denoise": p["denoise"], "downsample": p["downsample"],
          "figures": p["figures"] | {"per_roi": False}, "outputs": p["outputs"]}
    e = Experiment.open(exp_dir, tmp_path / "out", ["230404_5"])
    row = run_step("load", e, load=p["load"], **kw).iloc[0]
    assert row["status"] == "failed" and "two.tif: the stack has 2 channels" in row["reason"]
    assert not e.has(e.sessions[0], "load")
    row = run_step("load", e, load=p["load"] | {"channel": 1}, **kw).iloc[0]
    assert row["status"] == "ok"
    ds = io.open_store(e.path(e.sessions[0], "load"))
    np.testing.assert_array_equal(ds["mip"].values, calcium.max(axis=0))
    expected = calcium[:60].reshape(6, 10, 16, 2, 20, 2).astype(np.float64).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(ds["movie"].values, expected, rtol=1e-6)


def test_a_dark_frame_is_left_out_of_its_block(tmp_path):
    from _untidy import read_stack, replace_with_tiff

    exp_dir = demo.write_demo_experiment(tmp_path, n_frames=60, frame_shape=(64, 80), seed=2)
    folder = exp_dir / "04-04-23" / "230404_5"
    stack = read_stack(folder)
    p = load_params()
    kw = {"compute": p["compute"], "load": p["load"], "registration": p["registration"],
          "denoise": p["denoise"], "downsample": p["downsample"],
          "figures": p["figures"] | {"per_roi": False}, "outputs": p["outputs"] | {"movie": "none"}}

    def downsampled(frames, name):
        replace_with_tiff(folder, frames, "s.tif", finterval=0.1)
        e = Experiment.open(exp_dir, tmp_path / name, ["230404_5"])
        row = run_step("load", e, **kw).iloc[0]
        ds = io.open_store(e.path(e.sessions[0], "load"))
        return row, ds["movie"].values.mean(axis=(1, 2)), ds["bad_frame"].values

    _, reference, bad = downsampled(stack, "out0")
    assert not bad.any()
    dark = stack.copy()
    dark[34] = np.percentile(stack, 1)  # the shutter closed: a flat frame at the offset
    row, values, bad = downsampled(dark, "out1")
    assert np.flatnonzero(bad).tolist() == [34]
    assert ("1 of 60 frames registered badly (frames 34, from 0: dark, blurred, flashed or "
            "moved beyond registration.max_shift_px)") in row["warnings"]
    # the block of frames 30-39 is the mean of its 9 other frames: within their noise of
    # the 10-frame mean; the dark frame counted would lower it by a tenth of the signal
    # above the offset
    drop = (stack[30:40].mean() - dark[30:40].mean()) / stack[30:40].mean()
    assert drop > 0.03
    assert abs(values[3] / reference[3] - 1) < drop / 5  # measured 0.0004 against 0.053
    np.testing.assert_allclose(np.delete(values, 3), np.delete(reference, 3), rtol=1e-4)


def test_empty_experiment_tables_keep_their_header(tmp_path):
    exp_dir = demo.write_demo_experiment(tmp_path, n_frames=20, frame_shape=(32, 40), seed=1)
    e = Experiment.open(exp_dir, tmp_path / "out")
    tables = steps.collect_analysis_step(e)  # no session was analysed
    for kind in ("events", "features", "network_events"):
        table = pd.read_csv(e.root / f"{kind}.csv")
        assert len(table) == 0 and list(table.columns) == list(tables[kind].columns), kind
    assert {"roi", "frame", "time_s", "amplitude"} <= set(pd.read_csv(e.root / "events.csv"))
    assert not (e.root / "sessions_tests.csv").exists()


def test_a_neuropil_correction_runs_through_the_steps(tmp_path):
    """neuropil.method annulus: the ring trace is stored beside raw and background, the
    signal fitted is raw - c x ring - (1 - c) x background, and the per-ROI raw figure
    and the tidy table carry it."""
    exp_dir = demo.write_demo_experiment(tmp_path, n_frames=100, frame_shape=(40, 48), seed=6,
                                         sessions=["230404_5"])
    p = load_params()
    p["registration"] = p["registration"] | {"enabled": False}
    p["synchrony"] = p["synchrony"] | {"n_shuffles": 20}
    p["outputs"] = p["outputs"] | {"nwb": False, "movie": "none"}
    p["neuropil"] = p["neuropil"] | {"method": "annulus", "coefficient": 0.5}
    e = Experiment.open(exp_dir, tmp_path / "out")
    tables = _chain(e, p)
    assert all((t["status"] == "ok").all() for t in tables.values())
    (s,) = e.sessions
    res = e.open_store(s, "result").load()
    assert res.attrs["neuropil_method"] == "annulus" and res.attrs["neuropil_coefficient"] == 0.5
    expected = (res["raw"].astype(float) - 0.5 * res["neuropil"].astype(float)
                - 0.5 * res["background"].astype(float))
    np.testing.assert_allclose(res["signal"], expected, rtol=1e-5, atol=1e-3)
    assert not np.allclose(res["signal"], res["raw"] - res["background"], atol=1e-2)
    fig = plots.roi_raw_figure(res, int(res["roi"][0]))
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "neuropil (ring around the ROI)" in labels
    from calim_helpers import aggregate

    tidy = aggregate.tidy_table(aggregate.experiment_dataset([res]))
    assert list(tidy.columns[tidy.columns.get_loc("background") + 1:][:1]) == ["neuropil"]


def test_per_roi_figures_as_one_pdf_per_session(tmp_path):
    """figures.per_roi_pdf: the three figures of every ROI, ROI after ROI, in one PDF."""
    import re

    exp_dir = demo.write_demo_experiment(tmp_path, n_frames=40, frame_shape=(32, 40), seed=2,
                                         sessions=["230404_5"])
    p = load_params()
    e = Experiment.open(exp_dir, tmp_path / "out")
    compute = p["compute"] | {"workers": 1}
    figures = {"per_roi": False, "per_roi_pdf": True, "dpi": 30}
    run_step("load", e, compute=compute, load=p["load"], registration=p["registration"],
             denoise=p["denoise"], downsample=p["downsample"], figures=figures,
             outputs=p["outputs"])
    run_step("rois", e, compute=compute, background=p["background"], figures=figures,
             rois={"source": "expert"}, detection=p["detection"], neuropil=p["neuropil"])
    table = run_step("arpls", e, compute=compute, arpls=p["arpls"], normalize="dff",
                     trim_start=0, figures=figures)
    assert (table["status"] == "ok").all()
    s = e.sessions[0]
    n_rois = e.open_store(s, "result").sizes["roi"]
    pdf = e.file(s, "rois.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type /Page\b(?!s)", pdf)) == 3 * n_rois
    assert not list(e.session_dir(s).glob("*_mask*.png"))  # per_roi false: no PNGs


def test_rois_with_saturated_pixels_are_named(tmp_path):
    from _untidy import read_stack, replace_with_tiff

    exp_dir = demo.write_demo_experiment(tmp_path, n_frames=60, frame_shape=(64, 80), seed=2)
    folder = exp_dir / "04-04-23" / "230404_5"
    zip_path = next(folder.rglob("*.zip"))
    roi_list = rois.read_rois(zip_path)
    labels = rois.label_image(roi_list, (64, 80))
    stack = read_stack(next(folder.glob("*MMStack*.ome.tif")))
    assert stack.dtype == np.uint16 and stack.max() < 65535
    ys, xs = np.nonzero(labels == 2)
    cy, cx = int(np.median(ys)), int(np.median(xs))
    assert (labels[cy - 2:cy + 3, cx - 2:cx + 3] == 2).all()
    # an over-exposed cell: a 5 x 5 patch of ROI 2 at the camera's maximum in every frame
    # (a patch that saturates in a few frames only can pull those frames' registration:
    # it is a bright feature the template lacks)
    stack[:, cy - 2:cy + 3, cx - 2:cx + 3] = 65535
    replace_with_tiff(folder, stack, "clipped.tif", finterval=0.1)
    p = load_params()
    e = Experiment.open(exp_dir, tmp_path / "out", ["230404_5"])
    figures = {"per_roi": False, "per_roi_pdf": False, "dpi": 40}
    for registration in (False, True):  # the MIP raw, and resampled by motion correction
        run_step("load", e, compute=p["compute"], load=p["load"],
                 registration=p["registration"] | {"enabled": registration},
                 denoise=p["denoise"], downsample=p["downsample"], figures=figures,
                 outputs=p["outputs"] | {"movie": "none"})
        row = run_step("rois", e, compute=p["compute"], background=p["background"],
                       figures=figures, rois={"source": "expert"}, detection=p["detection"],
                       neuropil=p["neuropil"]).iloc[0]
        assert row["status"] == "ok" and row["saturated_rois"] == 1, registration
        name = roi_list[1].name
        assert (f"1 ROI(s) hold pixels that reached the camera's maximum (65535, uint16)"
                f" in at least one frame: ROI 2 {name!r}: ") in row["warnings"]
        assert "ROI 1 " not in row["warnings"].split("maximum")[1]
        found = int(row["warnings"].split(f"{name!r}: ")[1].split(" of ")[0])
        assert (9 if registration else 25) <= found <= 25, found  # interpolation blurs edges


def test_a_12_bit_camera_saturates_at_its_bit_depth(tmp_path):
    from _untidy import read_stack

    from calim_helpers.synthetic.mmstack import write_mmstack

    exp_dir = demo.write_demo_experiment(tmp_path, n_frames=60, frame_shape=(64, 80), seed=2)
    folder = exp_dir / "04-04-23" / "230404_5"
    roi_list = rois.read_rois(next(folder.rglob("*.zip")))
    labels = rois.label_image(roi_list, (64, 80))
    original = read_stack(folder)
    ys, xs = np.nonzero(labels == 2)
    cy, cx = int(np.median(ys)), int(np.median(xs))
    # the demo's photons on a 12-bit scale, ROI 2's centre at 4095 in every frame
    stack = np.round(original * (3000.0 / original.max())).astype(np.uint16)
    stack[:, cy - 2:cy + 3, cx - 2:cx + 3] = 4095
    p = load_params()
    figures = {"per_roi": False, "per_roi_pdf": False, "dpi": 40}

    def run_with(frames, bit_depth):
        for f in list(folder.glob("*MMStack*")):
            f.unlink()
        write_mmstack(folder, "230404_5", iter(frames), n_frames=len(frames),
                      frame_shape=(64, 80), pixel_size_um=0.65, interval_ms=100.0,
                      summary={"BitDepth": bit_depth})
        e = Experiment.open(exp_dir, tmp_path / f"out{bit_depth}{frames.max()}", ["230404_5"])
        # without motion correction (the MIP after resampling: the test above)
        run_step("load", e, compute=p["compute"], load=p["load"],
                 registration=p["registration"] | {"enabled": False}, denoise=p["denoise"],
                 downsample=p["downsample"], figures=figures,
                 outputs=p["outputs"] | {"movie": "none"})
        return run_step("rois", e, compute=p["compute"], background=p["background"],
                        figures=figures, rois={"source": "expert"}, detection=p["detection"],
                        neuropil=p["neuropil"]).iloc[0]

    row = run_with(stack, 12)
    assert row["status"] == "ok" and row["saturated_rois"] == 1
    assert (f"reached the camera's maximum (4095, uint16) in at least one frame: ROI 2 "
            f"{roi_list[1].name!r}: ") in row["warnings"]
    # the same data declared 16-bit: 4095 is not the maximum, nothing is flagged
    assert run_with(stack, 16)["saturated_rois"] == 0
    # a declared depth the data contradict is not used
    stack[:, 8:14, 8:14] = 9000
    row = run_with(stack, 12)
    assert row["saturated_rois"] == 0
    assert re.search(r"bit depth whose largest value is 4095, but the data reach 9000: the "
                     r"bit depth is wrong; saturation is checked at uint16's maximum 65535",
                     row["warnings"]), row["warnings"]


def test_the_demo_run_has_no_saturated_roi(run):
    e, _ = run
    status = pd.read_csv(e.root / "status" / "rois.csv")
    assert (status["saturated_rois"] == 0).all()


def test_characters_missing_from_the_fonts_give_one_warning_not_one_per_character(
        tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from calim_helpers.workflow import runner

    def draw(experiment, session):
        fig, ax = plt.subplots()
        ax.set_title("细胞 ROI 3 · 細胞")  # two characters twice, one more
        fig.savefig(tmp_path / "f.png")
        plt.close(fig)
        warnings.warn("another warning", UserWarning, stacklevel=1)
        return {}

    monkeypatch.setitem(runner.STEPS, "load", draw)
    exp_dir = demo.write_demo_experiment(tmp_path / "d", n_frames=20, frame_shape=(32, 40),
                                         seed=1, sessions=["230404_5"])
    e = Experiment.open(exp_dir, tmp_path / "out")
    compute = {"scheduler": "threads", "workers": 1, "parallel_sessions": 1, "resume": False}
    with warnings.catch_warnings(record=True) as echoed:
        warnings.simplefilter("always")
        row = run_step("load", e, compute=compute).iloc[0]
    messages = row["warnings"].split(" | ")
    assert "UserWarning: another warning" in messages
    assert not [m for m in messages if "Glyph" in m]
    boxes = [m for m in messages if "empty boxes" in m]
    assert len(boxes) == 1 and "3 character(s) (细 胞 細)" in boxes[0], messages
    assert "DejaVu Sans" in boxes[0]
    assert not [w for w in echoed if "Glyph" in str(w.message)]
    assert len([w for w in echoed if "empty boxes" in str(w.message)]) == 1
