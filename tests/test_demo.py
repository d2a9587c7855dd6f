"""Tests of calim_helpers.demo: a synthetic experiment with known ground truth."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import roifile
import tifffile
from matplotlib.path import Path as MplPath

from calim_helpers import demo

SMALL = {"pixel_size_um": 1.0}  # somata of 10-15 px: a tiny frame still holds a few


def _session(seed=0, **kwargs):
    args = {"n_frames": 60, "frame_shape": (48, 64), "n_neurons": 4, **kwargs}
    return demo.simulate_session(
        args.pop("n_frames"), args.pop("frame_shape"), args.pop("n_neurons"),
        **{**SMALL, "seed": seed, **args},
    )


def _polygon_mask(xy, shape):
    """Brute-force oracle: pixels whose centre (col + .5, row + .5) is inside."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
    return MplPath(np.asarray(xy)).contains_points(centres).reshape(shape)


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_session_different_seed_differs():
    a, b, c = _session(3, motion=True), _session(3, motion=True), _session(4, motion=True)
    ta, tb, tc = demo.session_truth(a), demo.session_truth(b), demo.session_truth(c)
    assert ta.keys() == tb.keys()
    for key in ta:
        np.testing.assert_array_equal(ta[key], tb[key], err_msg=key)
    np.testing.assert_array_equal(demo.render_frames(a, 0, 60), demo.render_frames(b, 0, 60))
    assert not np.array_equal(ta["footprints"], tc["footprints"])
    assert not np.array_equal(ta["shifts"], tc["shifts"])
    assert not np.array_equal(demo.render_frames(a, 0, 5), demo.render_frames(c, 0, 5))


def test_chunked_generation_equals_unchunked():
    s = _session(7, motion=True)
    whole = demo.render_frames(s, 0, s.n_frames)
    for chunk in (1, 7, 50, 60, 1000):
        blocks = list(demo.iter_frames(s, chunk_frames=chunk))
        assert all(len(b) <= chunk for b in blocks)
        np.testing.assert_array_equal(np.concatenate(blocks), whole)
    np.testing.assert_array_equal(demo.render_frames(s, 13, 31), whole[13:31])


def test_components_have_independent_streams():
    # turning motion on must not change the spikes, footprints or ROIs
    still, moving = _session(5), _session(5, motion=True)
    np.testing.assert_array_equal(still.dff, moving.dff)
    np.testing.assert_array_equal(still.somata.patches, moving.somata.patches)
    assert still.roi_names == moving.roi_names


# --------------------------------------------------------------------------- shapes


def test_shapes_and_dtypes():
    s = _session(1, motion=True)
    t = demo.session_truth(s)
    n, (ny, nx), nt = s.n_neurons, s.frame_shape, s.n_frames
    assert n == 4
    movie = demo.render_frames(s, 0, nt)
    assert movie.shape == (nt, ny, nx) and movie.dtype == np.uint16
    assert t["footprints"].shape == (n, ny, nx) and t["footprints"].dtype == np.float32
    assert t["dff"].shape == (n, nt) and t["dff"].dtype == np.float32
    for key in ("bleach", "drift", "neuropil_dff", "time_s"):
        assert t[key].shape == (nt,), key
    assert t["shifts"].shape == (nt, 2)
    assert t["neuropil"].shape == (ny, nx)
    assert t["roi_neuron"].shape == (n,) and t["roi_names"].shape == (n,)
    assert t["roi_vertex_offsets"][-1] == len(t["roi_vertices_xy"])
    k = t["spike_times_s"].shape
    assert t["spike_neuron"].shape == k and t["spike_amplitude"].shape == k
    assert np.all(np.diff(t["spike_times_s"]) >= 0)
    assert np.all((t["spike_times_s"] >= 0) & (t["spike_times_s"] < nt * s.frame_interval_s))
    np.testing.assert_allclose(t["time_s"], np.arange(nt) * 0.1)
    # camera: offset 100 plus positive signal, no saturation
    assert 100 < movie.mean() < 5000 and movie.max() < 65535


def test_footprints_inside_frame_and_peak_one():
    s = _session(2, n_neurons=5)
    fp = s.somata.dense()
    np.testing.assert_allclose(fp.max(axis=(1, 2)), 1.0)
    border = np.ones(s.frame_shape, dtype=bool)
    border[1:-1, 1:-1] = False
    assert fp[:, border].max() == 0.0
    # patches sum to the dense footprints (nothing lost at the frame edge)
    np.testing.assert_allclose(fp.sum(axis=(1, 2)), s.somata.patches.sum(axis=(1, 2)), rtol=1e-5)


def test_somata_realistic_size_and_mostly_separate():
    som = demo.soma_footprints((96, 128), 10, pixel_size_um=0.65, seed=0)
    diameter_um = 2 * np.sqrt(som.semi_axes.prod(axis=1)) * 0.65
    assert np.all((diameter_um > 9) & (diameter_um < 16))
    fp = som.dense()
    overlap = (fp > 0.5).sum(axis=0) > 1
    assert overlap.sum() < 0.02 * (fp > 0.5).sum()


def test_soma_placement_fails_clearly():
    with pytest.raises(ValueError, match="n_neurons"):
        demo.soma_footprints((64, 64), 200, seed=0)
    with pytest.raises(ValueError, match="frame_shape"):
        demo.soma_footprints((10, 10), 1, seed=0)


# --------------------------------------------------------------------------- ROIs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rois_enclose_their_neuron(seed):
    # lab pixel size: somata of 15-23 px, soft edges ~1 px
    s = demo.simulate_session(10, (96, 128), 10, seed=seed)
    fp = s.somata.dense()
    assert len(s.roi_polygons) == len(s.roi_names) == s.n_neurons
    assert sorted(s.roi_neuron.tolist()) == list(range(s.n_neurons))
    fractions = []
    for xy, neuron in zip(s.roi_polygons, s.roi_neuron, strict=True):
        assert 12 <= len(xy) <= 24
        mask = _polygon_mask(xy, s.frame_shape)
        mass = fp[neuron]
        fractions.append((mass * mask).sum() / mass.sum())
        # and little of any other neuron
        others = np.delete(fp, neuron, axis=0).sum(axis=0)
        assert (others * mask).sum() < 0.1 * mass.sum()
    fractions = np.array(fractions)
    # "slightly imperfect": most ROIs hold > 80% of their neuron's mass, none < 75%
    assert fractions.min() > 0.75 and np.mean(fractions > 0.8) >= 0.9
    assert np.mean(fractions) > 0.85


def test_roi_names_and_partly_outside():
    s = _session(0, n_neurons=4, roi_outside=True)
    ny, nx = s.frame_shape
    out = [
        np.any((xy[:, 0] < 0) | (xy[:, 1] < 0) | (xy[:, 0] > nx) | (xy[:, 1] > ny))
        for xy in s.roi_polygons
    ]
    assert sum(out) == 1
    assert all(len(n) == 9 and n[4] == "-" for n in s.roi_names if n.count("-") == 1)
    cells = _session(0, n_neurons=4, roi_naming="cell")
    assert cells.roi_names == ["cell_01", "cell_02", "cell_03", "cell_04"]
    inside = _session(0, n_neurons=4)
    for xy in inside.roi_polygons:
        assert xy.min() >= 0 and xy[:, 0].max() <= nx and xy[:, 1].max() <= ny


def test_imagej_rois_round_trip(tmp_path):
    s = _session(4, n_neurons=5)
    rois = demo.imagej_rois(s.roi_polygons, s.roi_names)
    path = tmp_path / "RoiSet.zip"
    roifile.roiwrite(path, rois, mode="w")
    back = roifile.roiread(path)
    assert [r.name for r in back] == s.roi_names
    assert all(r.roitype == roifile.ROI_TYPE.POLYGON for r in back)
    kinds = set()
    for r, xy in zip(back, s.roi_polygons, strict=True):
        np.testing.assert_allclose(r.coordinates(), xy, atol=1e-4)
        kinds.add(r.subpixel_coordinates is not None)
    assert kinds == {True, False}  # both sub-pixel and integer polygons occur


# --------------------------------------------------------------------------- activity


def test_kernel_peak_and_decay():
    tr, td = 0.05, 0.7
    t_peak = demo.kernel_peak_time(tau_rise_s=tr, tau_decay_s=td)
    assert 0.05 < t_peak < 0.25
    t = np.linspace(-1, 5, 60001)
    k = demo.calcium_kernel(t, tau_rise_s=tr, tau_decay_s=td)
    assert k[t < 0].max() == 0.0
    assert t[np.argmax(k)] == pytest.approx(t_peak, abs=1e-3)
    assert k.max() == pytest.approx(1.0, abs=1e-9)
    after = k[t > t_peak]
    assert np.all(np.diff(after) < 0)
    # the tail decays with tau_decay
    k1, k2 = demo.calcium_kernel(np.array([2.0, 2.0 + td]), tau_rise_s=tr, tau_decay_s=td)
    assert k2 / k1 == pytest.approx(math.exp(-1), rel=1e-6)


def test_dff_of_one_spike_is_the_frame_averaged_kernel():
    dt = 0.1
    spike = 1.234
    args = {"n_neurons": 2, "n_frames": 100, "frame_interval_s": dt}
    dff = demo.dff_traces([spike], [1], [0.8], **args)
    assert np.all(dff[0] == 0) and np.all(dff[1, :12] == 0)
    peak = int(np.argmax(dff[1]))
    t_peak = demo.kernel_peak_time()
    assert peak == int((spike + t_peak) // dt) or peak == int((spike + t_peak) // dt) - 1
    assert 0.6 < dff[1].max() <= 0.8
    assert np.all(np.diff(dff[1, peak:]) < 0)
    # exact exposure average == fine numerical average of the kernel
    fine = np.arange(0, 10, 1e-4) + 0.5e-4
    ref = 0.8 * demo.calcium_kernel(fine - spike).reshape(100, -1).mean(axis=1)
    np.testing.assert_allclose(dff[1], ref, atol=1e-5)


def test_dff_does_not_mutate_inputs_and_validates():
    times, neuron, amp = np.array([0.5, 2.0]), np.array([0, 1]), np.array([0.3, 0.4])
    for a in (times, neuron, amp):
        a.setflags(write=False)
    a1 = demo.dff_traces(times, neuron, amp, n_neurons=2, n_frames=40)
    a2 = demo.dff_traces(times, neuron, amp, n_neurons=2, n_frames=40)
    np.testing.assert_array_equal(a1, a2)
    with pytest.raises(ValueError, match="neuron indices"):
        demo.dff_traces(times, neuron, amp, n_neurons=1, n_frames=40)
    with pytest.raises(ValueError, match="frame_interval_s"):
        demo.dff_traces(times, neuron, amp, n_neurons=2, n_frames=40, frame_interval_s=0)


def test_spike_trains_rates_and_bursts():
    sp = demo.spike_trains(40, 600.0, seed=0)
    in_burst = sp.in_burst
    solo_rate = (~in_burst).sum() / 40 / 600.0
    assert 0.05 < solo_rate < 0.3
    assert 15 <= sp.burst_times_s.size <= 50  # ~0.05 Hz over 600 s
    # a burst recruits many neurons within ~0.5 s
    onset = sp.burst_times_s[0]
    near = (sp.times_s >= onset) & (sp.times_s < onset + 0.5) & in_burst
    assert np.unique(sp.neuron[near]).size >= 10
    assert np.all(sp.amplitude > 0)


def test_session_dff_peaks_visible():
    s = demo.simulate_session(600, (96, 128), 10, seed=0)
    binned = s.dff.reshape(s.n_neurons, -1, 10).mean(axis=2)
    assert np.all(s.dff.max(axis=1) < 4)
    assert np.median(binned.max(axis=1)) > 0.2


# --------------------------------------------------------------------------- slow artefacts


def test_bleach_monotone_with_requested_loss():
    b = demo.bleach_curve(500, fraction=0.3)
    assert b[0] == 1.0 and b[-1] == pytest.approx(0.7)
    assert np.all(np.diff(b) < 0)
    assert np.all(demo.bleach_curve(10, fraction=0.0) == 1.0)
    with pytest.raises(ValueError, match="fraction"):
        demo.bleach_curve(10, fraction=1.2)


def test_drift_bounded_and_slow():
    d = demo.drift_curve(600, amplitude=8.0, seed=3)
    assert np.abs(d).max() == pytest.approx(8.0)
    assert np.abs(np.diff(d)).max() < 8.0 * 3 * np.pi / 599 * 1.5


@pytest.mark.parametrize("amplitude", [0.5, 3.0])
def test_motion_shifts_bounded(amplitude):
    sh = demo.motion_shifts(
        300, amplitude_px=amplitude, wander_px=amplitude / 2, jump_px=amplitude / 2, seed=1
    )
    assert sh.shape == (300, 2)
    assert np.abs(sh).max() <= amplitude
    assert np.abs(sh).max() > 0.3 * amplitude
    assert np.abs(sh[0]).max() < 0.1 + 4 * 0.15  # starts near the reference position


def test_motion_moves_the_image_by_the_true_shift():
    # bright, silent cells, no neuropil: the frame's centroid follows the shift
    s = _session(
        2, n_neurons=3, motion=True, brightness=5e3, brightness_cv=0.0, neuropil_level=0.0,
        rate_hz=(0.0, 0.0), burst_rate_hz=0.0, drift_amplitude=0.0, read_noise=0.0,
    )
    movie = demo.render_frames(s, 0, s.n_frames).astype(float) - s.offset
    rows, cols = np.mgrid[: s.frame_shape[0], : s.frame_shape[1]]
    mass = movie.sum(axis=(1, 2))
    centroid = np.stack(
        [(movie * rows).sum(axis=(1, 2)) / mass, (movie * cols).sum(axis=(1, 2)) / mass], axis=1
    )
    moved = centroid - centroid[0]
    np.testing.assert_allclose(moved, s.shifts - s.shifts[0], atol=0.05)
    assert np.abs(s.shifts).max() > 1.0


def test_neuropil_smooth_positive_mean_one():
    img = demo.neuropil_image((96, 128), pad_px=5, seed=0)
    assert img.shape == (106, 138) and img.min() >= 0.2 - 1e-12
    assert img[5:-5, 5:-5].mean() == pytest.approx(1.0)
    assert np.abs(np.diff(img, axis=1)).max() < 0.05


# --------------------------------------------------------------------------- experiment


def test_plan_experiment_sessions_differ():
    plans = demo.plan_experiment(n_frames=60)
    assert [(p.date, p.name) for p in plans] == [
        ("04-04-23", "230404_5"), ("04-04-23", "230404_9"),
        ("05-04-23", "230405_2"), ("05-04-23", "230405_7"),
    ]
    for p in plans:
        dd, mm, yy = p.date.split("-")
        assert p.name.split("_")[0] == yy + mm + dd
    counts = [p.session.n_neurons for p in plans]
    assert len(set(counts)) > 1 and all(8 <= c <= 15 for c in counts)
    moving = [bool(np.any(p.session.shifts)) for p in plans]
    assert any(moving) and not all(moving)
    assert len({p.session.bleach[-1] for p in plans}) == 4
    assert {p.roi_path for p in plans} == {"ROIs/ROIs.zip", "Rois/Rois.zip"}
    assert plans[0].session.frame_shape == (96, 128)
    with pytest.raises(ValueError, match="sessions"):
        demo.plan_experiment(sessions=["999999_1"])


def test_write_demo_experiment_layout(tmp_path):
    kw = {"n_frames": 60, "frame_shape": (32, 40), "chunk_frames": 25}
    exp = demo.write_demo_experiment(tmp_path, **kw)
    assert exp == tmp_path / "DEMO"
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    expected = ["DEMO_truth/README.txt"]
    for date, name, rois in [
        ("04-04-23", "230404_5", "ROIs/ROIs.zip"), ("04-04-23", "230404_9", "ROIs/ROIs.zip"),
        ("05-04-23", "230405_2", "Rois/Rois.zip"), ("05-04-23", "230405_7", "ROIs/ROIs.zip"),
    ]:
        expected += [
            f"DEMO/{date}/{name}/{name}_MMStack_Pos0.ome.tif",
            f"DEMO/{date}/{name}/{name}_MMStack_Pos0_metadata.txt",
            f"DEMO/{date}/{name}/{rois}",
            f"DEMO_truth/{date}/{name}/session.json",
            f"DEMO_truth/{date}/{name}/truth.npz",
        ]
    assert files == sorted(expected)

    plans = demo.plan_experiment(n_frames=60, frame_shape=(32, 40))
    for plan in plans:
        folder = exp / plan.date / plan.name
        stack = tifffile.imread(folder / f"{plan.name}_MMStack_Pos0.ome.tif")
        np.testing.assert_array_equal(stack, demo.render_frames(plan.session, 0, 60))
        truth = np.load(tmp_path / "DEMO_truth" / plan.date / plan.name / "truth.npz")
        assert set(truth.files) == set(demo.session_truth(plan.session))
        assert truth["footprints"].shape[0] == len(roifile.roiread(folder / plan.roi_path))
        np.testing.assert_array_equal(truth["dff"], plan.session.dff.astype(np.float32))
        info = json.loads((tmp_path / "DEMO_truth" / plan.date / plan.name / "session.json")
                          .read_text())
        assert info["seed"] == int(truth["seed"]) and info["roi_file"] == plan.roi_path

    with pytest.raises(FileExistsError):
        demo.write_demo_experiment(tmp_path, **kw)


def test_write_demo_experiment_continuation_files(tmp_path):
    exp = demo.write_demo_experiment(
        tmp_path, sessions=["230404_5"], n_frames=30, frame_shape=(32, 40),
        max_file_bytes=20_000, seed=1,
    )
    folder = exp / "04-04-23" / "230404_5"
    stacks = sorted(p.name for p in folder.glob("*.ome.tif"))
    assert len(stacks) > 1 and "230404_5_MMStack_Pos0_1.ome.tif" in stacks
    assert not (exp / "05-04-23").exists()


@pytest.mark.parametrize("shift", [(0.3, -1.2), (-2.7, 2.99), (3.0, -3.0), (0.0, 0.5)])
def test_fast_shift_matches_scipy_spline_shift(shift):
    from scipy import ndimage

    from calim_helpers.synthetic.session import _shifted_crop

    image = ndimage.gaussian_filter(np.random.default_rng(0).random((40, 50)), 1.0)
    ref = ndimage.shift(image, shift, order=3, mode="mirror")[7:33, 7:43]
    np.testing.assert_allclose(_shifted_crop(image, shift, 7, (26, 36)), ref, atol=1e-12)


def test_neuropil_strength_scales_the_default_neuropil_only():
    base, same, strong = _session(2), _session(2, neuropil_strength=1.0), _session(
        2, neuropil_strength=4.0)
    np.testing.assert_array_equal(demo.render_frames(base, 0, 5), demo.render_frames(same, 0, 5))
    np.testing.assert_allclose(strong.neuropil, 4.0 * base.neuropil)
    np.testing.assert_array_equal(strong.dff, base.dff)
    np.testing.assert_array_equal(strong.neuropil_dff, base.neuropil_dff)
    assert demo.render_frames(strong, 0, 5).mean() > demo.render_frames(base, 0, 5).mean()
