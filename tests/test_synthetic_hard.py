"""Tests of the "hard" synthetic preset (calim_helpers.synthetic.hard) and the truth scorers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import roifile
import tifffile
from scipy import ndimage
from skimage.measure import points_in_poly

from calim_helpers import demo
from calim_helpers.synthetic.activity import dff_traces

SMALL = {"pixel_size_um": 1.0}  # somata of radius 4-9 px: a tiny frame holds a dozen


def _hard(seed=0, n_frames=60, shape=(64, 80), n=10, **kwargs):
    return demo.simulate_hard_session(n_frames, shape, n, **{**SMALL, "seed": seed, **kwargs})


@pytest.fixture(scope="module")
def still():
    """No motion, bleaching or drift: the scene is the model's sum, frame by frame."""
    s = _hard(3, n_frames=50, n=12, bleach_fraction=0.0, drift_amplitude=0.0)
    return s, demo.session_truth(s)


# ------------------------------------------------------------- the default stays the same


def test_default_sessions_carry_no_hard_truth():
    """A default session has no hard extras (its pixels are pinned by the notebooks' nbval
    references and the end-to-end truth tests, not by a hash copied from this code)."""
    s = demo.simulate_session(40, (32, 40), 2, pixel_size_um=1.5, roi_naming="cell",
                              roi_outside=True, seed=1)
    t = demo.session_truth(s)
    assert s.extras is None and s.difficulty == "default"
    assert "true_masks" not in t


# --------------------------------------------------------------------------- determinism


def test_hard_deterministic_and_chunking_invariant():
    a, b, c = _hard(5, motion=True), _hard(5, motion=True), _hard(6, motion=True)
    whole = demo.render_frames(a, 0, a.n_frames)
    np.testing.assert_array_equal(whole, demo.render_frames(b, 0, b.n_frames))
    for chunk in (1, 7, 60):
        np.testing.assert_array_equal(np.concatenate(list(demo.iter_frames(a, chunk_frames=chunk))),
                                      whole)
    ta, tb = demo.session_truth(a), demo.session_truth(b)
    for key in ta:
        np.testing.assert_array_equal(ta[key], tb[key], err_msg=key)
    assert not np.array_equal(whole[:3], demo.render_frames(c, 0, 3))


def test_simulate_session_hard_dispatch_and_validation():
    s = demo.simulate_session(30, (64, 80), 6, difficulty="hard", seed=2, **SMALL)
    t = _hard(2, n_frames=30, n=6)
    np.testing.assert_array_equal(demo.render_frames(s, 0, 30), demo.render_frames(t, 0, 30))
    assert demo.simulate_session(30, (64, 80), None, difficulty="hard", **SMALL).n_neurons == (
        demo.hard_neuron_count((64, 80), pixel_size_um=1.0))
    with pytest.raises(ValueError, match="difficulty"):
        demo.simulate_session(10, (64, 80), 3, difficulty="extreme")
    with pytest.raises(ValueError, match="brightness"):
        demo.simulate_session(10, (64, 80), 3, difficulty="hard", brightness=50.0)
    with pytest.raises(ValueError, match="n_neurons"):
        demo.simulate_session(10, (64, 80), None)
    with pytest.raises(ValueError, match="neuropil_strength"):
        demo.simulate_session(10, (64, 80), 3, neuropil_strength=-1.0)
    with pytest.raises(ValueError, match="dim_fraction"):
        _hard(dim_fraction=1.5)
    with pytest.raises(ValueError, match="cannot place"):
        demo.hard_somata((40, 40), 60, pixel_size_um=1.0)


# ------------------------------------------------------------------------ the model's sum


def test_noise_free_movie_is_the_sum_of_its_components(still):
    s, t = still
    frames = demo.noise_free_frames(s, 0, s.n_frames)
    local = np.einsum("ya,abt,xb->tyx", t["neuropil_weights_y"],
                      t["neuropil_grid_dff"].astype(float), t["neuropil_weights_x"])
    neuropil = t["neuropil"].astype(float) * (1.0 + t["neuropil_dff"][:, None, None] + local)
    cells = np.einsum("i,iyx,it->tyx", t["brightness"], t["footprints"].astype(float),
                      1.0 + t["dff"].astype(float))
    other = np.einsum("j,jyx,jt->tyx", t["contaminant_brightness"],
                      t["contaminant_footprints"].astype(float),
                      1.0 + t["contaminant_dff"].astype(float))
    np.testing.assert_allclose(frames, neuropil + cells + other, rtol=1e-5, atol=1e-3)
    # and each ROI's noise-free raw trace is its soma part plus its background part
    roi_mean = np.einsum("ryx,tyx->rt", t["roi_masks"].astype(float), frames)
    roi_mean /= t["roi_masks"].sum(axis=(1, 2))[:, None]
    np.testing.assert_allclose(roi_mean, t["roi_soma_f"] + t["roi_background_f"], rtol=1e-4)


def test_camera_counts_follow_the_noise_free_movie():
    s = _hard(4, n_frames=200, n=6, motion=True, read_noise=3.0)
    counts = (demo.render_frames(s, 0, 200).astype(float) - s.offset) / s.gain
    expected = demo.noise_free_frames(s, 0, 200)
    resid = counts - expected
    var = expected + (s.read_noise / s.gain) ** 2 + 1 / 12 / s.gain**2
    z = resid.sum(axis=0) / np.sqrt(var.sum(axis=0))  # per pixel, ~ N(0, 1)
    assert abs(z.mean()) < 0.05 and 0.9 < z.std() < 1.1


def test_roi_noise_matches_the_empirical_noise():
    quiet = {"rate_hz": (0.0, 0.0), "burst_rate_hz": 0.0, "rare_fraction": 0.0,
             "bleach_fraction": 0.0, "drift_amplitude": 0.0}
    s = _hard(8, n_frames=400, n=8, **quiet)
    t = demo.session_truth(s)
    assert t["spike_times_s"].size == 0 and not t["dff"].any()
    counts = (demo.render_frames(s, 0, 400).astype(float) - s.offset) / s.gain
    masks = t["roi_masks"].astype(float)
    roi = np.einsum("ryx,tyx->rt", masks, counts) / masks.sum(axis=(1, 2))[:, None]
    rest = t["roi_soma_f"][:, 0].astype(float)
    empirical = (roi / rest[:, None]).std(axis=1)
    np.testing.assert_allclose(empirical, t["roi_noise_dff"], rtol=0.15)
    cells = t["true_masks"].astype(float)
    own = t["brightness"] * np.einsum("iyx,iyx->i", cells, t["footprints"]) / cells.sum((1, 2))
    per_cell = np.einsum("iyx,tyx->it", cells, counts) / cells.sum(axis=(1, 2))[:, None]
    np.testing.assert_allclose((per_cell / own[:, None]).std(axis=1), t["neuron_noise_dff"],
                               rtol=0.15)


def test_roi_dff_clean_is_the_neurons_dff_for_an_isolated_roi(still):
    _, t = still
    overlap = np.einsum("ryx,iyx->ri", t["roi_masks"].astype(float), t["footprints"])
    alone = np.flatnonzero((overlap > 0).sum(axis=1) == 1)
    assert alone.size >= 2
    for k in alone:
        np.testing.assert_allclose(t["roi_dff_clean"][k], t["dff"][t["roi_neuron"][k]],
                                   rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------- what makes it hard


def test_dim_sizes_touching_and_contaminants():
    s = _hard(11, shape=(96, 128), n=20)
    t = demo.session_truth(s)
    n = s.n_neurons
    assert t["dim"].sum() == round(0.3 * n)
    assert np.all((t["dim_factor"][t["dim"]] >= 3) & (t["dim_factor"][t["dim"]] <= 5))
    assert np.all(t["dim_factor"][~t["dim"]] == 1)
    radius_um = np.sqrt(t["semi_axes_px"].prod(axis=1)) * s.pixel_size_um
    assert radius_um.min() >= 4.0 and radius_um.max() <= 9.0
    assert radius_um.max() - radius_um.min() > 2.0
    # touching cells: their true mask, grown by 2 px, meets another cell's
    masks = t["true_masks"]
    others = masks.sum(axis=0)
    meets = [(ndimage.binary_dilation(masks[i], iterations=2) & (others - masks[i] > 0)).any()
             for i in np.flatnonzero(t["touching"])]
    assert len(meets) >= 4 and np.mean(meets) >= 0.8
    kinds = t["contaminant_kind"]
    assert (kinds == "out_of_focus").sum() == round(0.3 * n)
    assert (kinds == "neurite").sum() == round(0.4 * n)
    fp = t["contaminant_footprints"]
    area = (fp > 0.5).sum(axis=(1, 2))
    # neurites are thin: area / length ~ width, far below a soma's
    assert np.median(area[kinds == "out_of_focus"]) > np.median(masks.sum(axis=(1, 2)))
    assert t["contaminant_brightness"].max() <= 0.5 * 80.0
    assert t["contaminant_dff"].max() > 0  # they fire on their own


def test_neuropil_strength_scales_the_neuropil_only():
    weak, strong = _hard(7, neuropil_strength=0.5), _hard(7, neuropil_strength=4.0)
    np.testing.assert_allclose(strong.neuropil, 8.0 * weak.neuropil)
    np.testing.assert_array_equal(strong.dff, weak.dff)
    np.testing.assert_array_equal(strong.somata.dense(), weak.somata.dense())
    tw, ts = demo.session_truth(weak), demo.session_truth(strong)
    np.testing.assert_array_equal(tw["roi_soma_f"], ts["roi_soma_f"])
    assert float(ts["neuropil_strength"]) == 4.0
    assert (ts["roi_background_f"] > tw["roi_background_f"]).all()
    # the neuropil co-fluctuates with the cells' activity
    grid = tw["neuropil_grid_dff"].reshape(-1, weak.n_frames)
    assert np.corrcoef(grid.mean(axis=0), weak.dff.mean(axis=0))[0, 1] > 0.5


def test_rare_cells_and_small_transients():
    s = _hard(12, n_frames=600, shape=(96, 128), n=20)
    t = demo.session_truth(s)
    rare = np.flatnonzero(t["rare"])
    assert rare.size == 5
    per_neuron = np.bincount(t["transient_neuron"], minlength=s.n_neurons)
    assert np.all((per_neuron[rare] >= 1) & (per_neuron[rare] <= 4))
    assert per_neuron[~t["rare"]].mean() > per_neuron[rare].mean() + 1
    assert not t["spike_in_burst"][np.isin(t["spike_neuron"], rare)].any()
    single = t["transient_n_spikes"] == 1
    assert t["transient_amplitude"][single].min() < 0.06
    assert t["transient_amplitude"].max() > 0.2


def test_transients_consistent_with_spikes():
    s = _hard(13, n_frames=300, n=8)
    t = demo.session_truth(s)
    dt = s.frame_interval_s
    for i in range(s.n_neurons):
        own = t["transient_neuron"] == i
        times = np.sort(t["spike_times_s"][t["spike_neuron"] == i])
        assert t["transient_n_spikes"][own].sum() == times.size
        starts = times[np.diff(times, prepend=-np.inf) >= 0.5]
        np.testing.assert_array_equal(t["transient_onset_s"][own], starts)
        np.testing.assert_array_equal(t["transient_onset_frame"][own], np.floor(starts / dt))
    assert np.all(t["transient_peak_frame"] >= t["transient_onset_frame"])
    assert np.all(t["transient_amplitude"] > 0)
    noise = t["neuron_noise_dff"][t["transient_neuron"]]
    np.testing.assert_allclose(t["transient_snr"], t["transient_amplitude"] / noise)
    # an isolated single spike: the amplitude is the frame-averaged kernel's peak
    iso = np.flatnonzero((t["transient_n_spikes"] == 1)
                         & (t["transient_onset_frame"] > 30) & (t["transient_onset_frame"] < 270))
    checked = 0
    for e in iso:
        i, t0 = t["transient_neuron"][e], t["transient_onset_s"][e]
        spikes = t["spike_times_s"][t["spike_neuron"] == i]
        if np.min(np.abs(spikes[spikes != t0] - t0), initial=np.inf) < 10.0:
            continue  # earlier transients leave exp(-10 / 0.7) < 1e-6 of theirs
        amp = t["spike_amplitude"][(t["spike_neuron"] == i) & (t["spike_times_s"] == t0)]
        alone = dff_traces(np.array([t0]), np.array([0]), amp, n_neurons=1, n_frames=300)
        assert t["transient_amplitude"][e] == pytest.approx(alone.max(), rel=1e-6, abs=1e-6)
        checked += 1
    assert checked >= 2


def test_expert_rois_bad_and_missing():
    s = _hard(14, shape=(96, 128), n=20)
    t = demo.session_truth(s)
    n_rois = len(s.roi_polygons)
    assert n_rois == s.n_neurons - round(0.15 * s.n_neurons)
    assert len(set(t["roi_neuron"].tolist())) == n_rois
    assert not np.isin(np.flatnonzero(t["unlabelled"]), t["roi_neuron"]).any()
    bad = t["roi_quality"] != 0
    assert bad.sum() == round(0.15 * n_rois)
    assert {1, -1} <= set(t["roi_quality"].tolist())
    assert np.all(t["roi_iou"][bad] < 0.45)
    assert np.median(t["roi_iou"][~bad]) > 0.6
    area = t["roi_masks"].sum(axis=(1, 2))
    cell = t["true_masks"].sum(axis=(1, 2))[t["roi_neuron"]]
    assert np.all(area[t["roi_quality"] == 1] > 2 * cell[t["roi_quality"] == 1])
    assert np.all(area[t["roi_quality"] == -1] < 0.5 * cell[t["roi_quality"] == -1])
    # the truth's ROI masks are the ImageJ rasterization of the ROIs written to the zip
    rois = demo.imagej_rois(s.roi_polygons, s.roi_names)
    for roi, mask in zip(rois, t["roi_masks"], strict=True):
        rows, cols = np.mgrid[: s.frame_shape[0], : s.frame_shape[1]]
        centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
        ref = points_in_poly(centres, roi.coordinates()).reshape(s.frame_shape)
        assert (ref != mask).sum() <= 2  # only pixel centres on an edge may differ


# ------------------------------------------------------------------------------ on disk


def test_write_hard_short_experiment(tmp_path):
    exp = demo.write_demo_experiment(tmp_path, name="HARD", difficulty="hard", n_frames=30,
                                     frame_shape=(48, 64), neuropil_strength=2.0, seed=1)
    truth_dir = tmp_path / "HARD_truth"
    assert "roi_dff_clean" in (truth_dir / "README.txt").read_text()
    sessions = sorted(exp.glob("*/*/*_MMStack_Pos0.ome.tif"))
    assert len(sessions) == 4
    for stack in sessions:
        date, name = stack.parent.parent.name, stack.parent.name
        truth = np.load(truth_dir / date / name / "truth.npz")
        info = json.loads((truth_dir / date / name / "session.json").read_text())
        assert info["difficulty"] == "hard" and info["neuropil_strength"] == 2.0
        assert tifffile.imread(stack).shape == (30, 48, 64)
        zips = list(stack.parent.glob("*/*.zip"))
        assert len(roifile.roiread(zips[0])) == truth["roi_masks"].shape[0] == info["n_rois"]
        assert truth["true_masks"].shape == truth["footprints"].shape
    plans = demo.plan_experiment(n_frames=30, frame_shape=(48, 64), difficulty="hard", seed=1)
    assert [p.session.n_neurons > 8 for p in plans] == [True] * 4


def test_plan_and_write_sessions_by_seed(tmp_path):
    plans = demo.plan_sessions([5, 17], n_frames=20, frame_shape=(48, 64))
    assert [(p.date, p.name) for p in plans] == [("01-01-24", "240101_5"),
                                                 ("01-01-24", "240101_17")]
    assert [p.session.seed for p in plans] == [5, 17]
    exp = demo.write_sessions(tmp_path, plans, name="HELD")
    assert (exp / "01-01-24" / "240101_17" / "ROIs" / "ROIs.zip").is_file()
    again = demo.plan_sessions([17], n_frames=20, frame_shape=(48, 64))[0].session
    np.testing.assert_array_equal(demo.render_frames(again, 0, 20),
                                  demo.render_frames(plans[1].session, 0, 20))
    with pytest.raises(ValueError, match="distinct"):
        demo.plan_sessions([3, 3])
    with pytest.raises(FileExistsError):
        demo.write_sessions(tmp_path, plans, name="HELD")


# ------------------------------------------------------------------------------ scorers


def test_polygon_mask_matches_an_independent_point_in_polygon():
    theta = np.linspace(0, 2 * np.pi, 17)[:-1]
    xy = np.stack([20.3 + 7.7 * np.cos(theta), 15.1 + 5.2 * np.sin(theta)], axis=1)
    rows, cols = np.mgrid[:30, :40]
    ref = points_in_poly(np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], 1), xy)
    np.testing.assert_array_equal(demo.polygon_mask(xy, (30, 40)), ref.reshape(30, 40))
    assert not demo.polygon_mask(xy - 100.0, (30, 40)).any()


def test_match_masks_brute_force():
    yy, xx = np.mgrid[:40, :40]
    def discs(centres, radii):
        return np.stack([np.hypot(yy - a, xx - b) <= q
                         for (a, b), q in zip(centres, radii, strict=True)])

    truth = discs([(10, 10), (10, 30), (30, 20)], [5, 5, 6])
    detected = discs([(11, 10), (30, 21), (2, 2)], [5, 6, 2])
    score = demo.match_masks(detected, truth)
    iou = demo.mask_iou(detected, truth)
    for a in range(3):
        for b in range(3):
            inter = (detected[a] & truth[b]).sum()
            assert iou[a, b] == pytest.approx(inter / (detected[a] | truth[b]).sum())
    assert score["tp"] == 2 and score["fp"] == 1 and score["fn"] == 1
    assert score["f1"] == pytest.approx(2 / 3)
    np.testing.assert_array_equal(score["matched_truth"], [True, False, True])
    empty = demo.match_masks(np.zeros((0, 40, 40), bool), truth)
    assert empty["recall"] == 0.0 and empty["fn"] == 3


def test_true_masks_fill_holes_and_bin():
    fp = np.zeros((1, 8, 8))
    fp[0, 2:6, 2:6] = 1.0
    fp[0, 3:5, 3:5] = 0.3  # a dim nucleus
    np.testing.assert_array_equal(demo.true_masks(fp)[0], fp[0] > 0)
    binned = demo.true_masks(fp, bin_yx=(2, 2))
    assert binned.shape == (1, 4, 4) and binned[0, 1:3, 1:3].all()


def test_match_events_and_trace_correlation():
    r = demo.match_events(np.array([10, 21, 50]), np.array([9, 20, 22, 80]), tolerance_frames=2)
    assert (r["tp"], r["fp"], r["fn"]) == (2, 1, 2)
    assert demo.match_events(np.array([]), np.array([]))["f1"] == 0.0
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 50)), rng.normal(size=(3, 50))
    ref = [np.corrcoef(a[i], b[i])[0, 1] for i in range(3)]
    np.testing.assert_allclose(demo.trace_correlation(a, b), ref)
    assert np.isnan(demo.trace_correlation(np.ones(5), np.arange(5.0)))


def test_true_transients_binned():
    dff = dff_traces(np.array([1.23, 1.3, 5.0]), np.array([0, 0, 0]), np.array([0.2, 0.1, 0.3]),
                     n_neurons=1, n_frames=100)
    tr = demo.true_transients(dff, np.array([1.23, 1.3, 5.0]), np.zeros(3, int),
                              frame_interval_s=0.1, time_bin=10)
    binned = dff.reshape(10, 10).mean(axis=1)
    np.testing.assert_array_equal(tr["onset_frame"], [1, 5])
    np.testing.assert_array_equal(tr["n_spikes"], [2, 1])
    assert tr["peak_dff"][0] == pytest.approx(binned[1:4].max())
    assert tr["amplitude"][1] == pytest.approx(binned[5:8].max() - binned[4])
    with pytest.raises(ValueError, match="time_bin"):
        demo.true_transients(dff, np.zeros(0), np.zeros(0, int), frame_interval_s=0.1,
                             time_bin=0)
