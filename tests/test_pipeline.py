"""Tests of calim_helpers.pipeline: SPEC §2 definitions, aggregation, ground-truth recovery."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from calim_helpers import baseline, demo, pipeline
from calim_helpers.errors import CalimInputError
from calim_helpers.params import load_params


def _traces(n_roi=3, n_time=80, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n_time)
    bg = 200 + 20 * np.exp(-t / 40) + rng.normal(0, 1, n_time)
    raw = 500 + 100 * np.exp(-t / 50)[None, :] + rng.normal(0, 3, (n_roi, n_time))
    raw[:, 30:33] += 150
    ds = xr.Dataset({"raw": (("roi", "time"), raw.astype(np.float32)),
                     "background": ("time", bg.astype(np.float32))},
                    coords={"roi": np.arange(1, n_roi + 1),
                            "roi_name": ("roi", [f"c{k}" for k in range(n_roi)]),
                            "time": t * 1.0})
    ds.attrs = {"experiment": "E", "date": "04-04-23", "session": "230404_5"}
    return ds


@pytest.mark.parametrize("method", ["dff", "session", "zscore"])
def test_correct_session_follows_the_spec_definitions(method):
    tr = _traces()
    out = pipeline.correct_session(tr, lam=10.0, normalize=method, trim_start=5)
    raw = tr["raw"].values.astype(float)
    signal = raw - tr["background"].values.astype(float)
    base, _ = baseline.arpls(signal, lam=10.0)
    base_raw, _ = baseline.arpls(raw, lam=10.0)
    np.testing.assert_allclose(out["signal"], signal, rtol=1e-6)
    np.testing.assert_allclose(out["baseline"], base, rtol=1e-5)
    np.testing.assert_allclose(out["corrected"], signal - base, atol=1e-3)
    np.testing.assert_allclose(out["baseline_raw"], base_raw, rtol=1e-5)
    np.testing.assert_allclose(out["dff"], (signal - base) / base_raw, atol=1e-6)
    np.testing.assert_allclose(out["dff_raw"], (raw - base_raw) / base_raw, atol=1e-6)
    assert np.isnan(out["norm"].values[:, :5]).all()
    assert np.isfinite(out["norm"].values[:, 5:]).all()
    if method == "dff":
        np.testing.assert_allclose(out["norm"][:, 5:], out["dff"][:, 5:], rtol=1e-6)
    if method == "session":
        scale = np.median(base_raw[:, 5:].mean(axis=1))
        assert out.attrs["session_scale"] == pytest.approx(scale, rel=1e-6)
        np.testing.assert_allclose(out["norm"][:, 5:], (signal - base)[:, 5:] / scale,
                                   rtol=1e-5)
    assert out.attrs["normalize"] == method and out.attrs["trim_start"] == 5
    assert out.attrs["lam"] == 10.0
    assert out["converged"].dtype == bool and out["n_iter"].dims == ("roi",)
    assert list(out["roi_name"].values) == ["c0", "c1", "c2"]


def test_transient_survives_and_drift_goes():
    tr = _traces()
    out = pipeline.correct_session(tr, lam=10.0)
    corrected = out["corrected"].values
    assert corrected[:, 30:33].mean() > 100  # the transient (150 counts) is kept
    quiet = np.r_[0:25, 40:80]
    assert np.abs(np.median(corrected[:, quiet])) < 5  # the 100-count bleach is gone


def test_resolve_lam_from_cutoff_records_both():
    lam, cut = pipeline.resolve_lam({"lam": 10.0, "cutoff_s": None}, 1.0)
    assert lam == 10.0 and cut == pytest.approx(baseline.cutoff_from_lam(10.0, 1.0))
    lam, cut = pipeline.resolve_lam({"lam": 10.0, "cutoff_s": 30.0}, 1.0)
    assert cut == 30.0 and lam == pytest.approx(baseline.lam_from_cutoff(30.0, 1.0))
    with pytest.raises(CalimInputError, match="cutoff_s needs a known frame interval"):
        pipeline.resolve_lam({"lam": 10.0, "cutoff_s": 30.0}, None)


def test_experiment_dataset_pads_shorter_sessions_and_names_cells():
    a = pipeline.correct_session(_traces(n_roi=2, n_time=40))
    b_tr = _traces(n_roi=3, n_time=30, seed=1)
    b_tr.attrs["session"] = "230404_9"
    b = pipeline.correct_session(b_tr)
    exp = pipeline.experiment_dataset([a, b])
    assert exp.sizes == {"cell": 5, "time": 40}
    assert list(exp["cell_id"].values) == ["04-04-23_230404_5_ROI1", "04-04-23_230404_5_ROI2",
                                           "04-04-23_230404_9_ROI1", "04-04-23_230404_9_ROI2",
                                           "04-04-23_230404_9_ROI3"]
    assert np.isnan(exp["norm"].values[2:, 30:]).all()
    np.testing.assert_array_equal(exp["norm"].values[2:, :30], b["norm"].values)
    table = pipeline.tidy_table(exp)
    assert len(table) == 5 * 40
    assert table.loc[table.roi_name == "c1", "session"].nunique() == 2


def test_unknown_session_is_named(tmp_path):
    exp = demo.write_demo_experiment(tmp_path, n_frames=20, frame_shape=(32, 40), seed=1)
    with pytest.raises(CalimInputError, match=r"no session 230499_1 \(known: 04-04-23_230404_5"):
        pipeline.Experiment.open(exp, tmp_path / "out", ["230499_1"])
    e = pipeline.Experiment.open(exp, tmp_path / "out", ["230405_2", "04-04-23_230404_5"])
    assert [s.id for s in e.sessions] == ["04-04-23_230404_5", "05-04-23_230405_2"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The default demo experiment through steps 1-3, in-process."""
    root = tmp_path_factory.mktemp("demo")
    exp_dir = demo.write_demo_experiment(root, seed=0)
    p = load_params()
    e = pipeline.Experiment.open(exp_dir, root / "out")
    figures = {"per_roi": False, "dpi": 50}
    for step, kw in (("load", {"load": p["load"], "downsample": p["downsample"]}),
                     ("rois", {"downsample": p["downsample"], "background": p["background"],
                               "figures": figures}),
                     ("arpls", {"arpls": p["arpls"], "normalize": "dff", "trim_start": 0,
                                "figures": figures})):
        status = pipeline.run_step(step, e, echo=lambda _: None, **kw)
        assert (status["status"] == "ok").all(), status
    return e, root / "DEMO_truth"


def test_normalized_traces_recover_the_true_dff(demo_run):
    e, truth_dir = demo_run
    r_norm, r_raw = [], []
    for s in e.sessions:
        ds = pipeline.open_store(e.path(s, "result")).load()
        truth = np.load(truth_dir / s.date / s.name / "truth.npz")
        n_t = ds.sizes["time"]
        true = truth["dff"][:, : n_t * 10].reshape(truth["dff"].shape[0], n_t, 10).mean(-1)
        for i, neuron in enumerate(truth["roi_neuron"]):
            r_norm.append(np.corrcoef(ds["norm"].values[i], true[neuron])[0, 1])
            r_raw.append(np.corrcoef(ds["raw"].values[i], true[neuron])[0, 1])
    assert len(r_norm) >= 30
    assert np.median(r_norm) >= 0.95, np.median(r_norm)
    assert np.median(r_norm) > np.median(r_raw) + 0.2, (np.median(r_norm), np.median(r_raw))


def test_background_pixels_lie_outside_every_roi(demo_run):
    e, _ = demo_run
    for s in e.sessions:
        tr = pipeline.open_store(e.path(s, "traces")).load()
        labels = tr["labels"].values
        fy, fx = 2, 2
        for y, x in zip(tr["background_y"].values, tr["background_x"].values, strict=True):
            assert not labels[y * fy:(y + 1) * fy, x * fx:(x + 1) * fx].any()
        n_grid = (labels.shape[0] // 2) * (labels.shape[1] // 2)
        assert tr.attrs["n_background_pixels"] == round(0.10 * n_grid)
