"""A synthetic calcium-imaging experiment with known ground truth.

The physics is a set of small pure functions (arrays in, arrays out, seeded with
``np.random.default_rng``); :func:`simulate_session` puts them together into a
:class:`DemoSession` (all the small time series and the geometry), whose pixels
:func:`render_frames` computes on demand, frame by frame, so a full-size session
(1500 x 512 x 688 uint16, about 1 GB) is streamed to disk and never held whole.
:func:`plan_experiment` simulates the four sessions of the demo experiment and
:func:`write_demo_experiment`, the only function that writes files (through
:func:`write_mmstack`, the Micro-Manager writer), streams them to disk in the SPEC §1
layout with their ground truth (``truth.npz``, see ``TRUTH_FIELDS``).

The code lives in :mod:`calim_helpers.synthetic`, one module per concern:
:mod:`~calim_helpers.synthetic.scene` (somata, neuropil),
:mod:`~calim_helpers.synthetic.activity` (spikes, calcium kernel, ΔF/F),
:mod:`~calim_helpers.synthetic.artefacts` (bleaching, drift, motion),
:mod:`~calim_helpers.synthetic.expert_rois` (imperfect Fiji ROIs),
:mod:`~calim_helpers.synthetic.session` (simulation, rendering, ground truth),
:mod:`~calim_helpers.synthetic.experiment` (the demo experiment on disk) and
:mod:`~calim_helpers.synthetic.mmstack` (the Micro-Manager writer). This module
re-exports their public names: use ``demo.simulate_session`` and so on.

Model of one frame ``t`` (electrons per pixel before the camera)::

    scene_t  = neuropil * (1 + neuropil_dff[t])
               + sum_i brightness[i] * footprint_i * (1 + dff[i, t])
    F_t      = shift(scene_t, shifts[t]) * bleach[t] + drift[t]
    counts_t = offset + gain * Poisson(F_t) + Normal(0, read_noise)   -> uint16

Conventions
-----------
- Arrays are ``(time, y, x)``; pixel ``(row, col)`` has its centre at
  ``(row, col)`` in numpy index coordinates and at ``(x, y) = (col + 0.5, row + 0.5)``
  in Fiji/ImageJ coordinates (ROI vertices, as roifile returns them, are ``(x, y)``).
- Frame ``t`` integrates light over ``[t * dt, (t + 1) * dt)`` and is stamped
  ``time_s[t] = t * dt``; spike times share that clock.
- ``shifts[t] = (dy, dx)`` moves the image content by ``+dy`` rows and ``+dx``
  columns: ``frame_t(y, x) = scene_t(y - dy, x - dx)``. Registering frame ``t``
  to the unshifted reference therefore means shifting it by ``(-dy, -dx)``.
- Every random component has its own stream ``default_rng([seed, stream])`` and
  the camera noise of frame ``t`` uses ``default_rng([seed, stream, t])``, so a
  frame does not depend on how the movie is cut into chunks.

Examples
--------
>>> import numpy as np
>>> from calim_helpers import demo
>>> s = demo.simulate_session(40, (32, 40), 2, pixel_size_um=1.5, seed=1)
>>> movie = demo.render_frames(s, 0, 40)
>>> movie.shape, movie.dtype
((40, 32, 40), dtype('uint16'))
>>> chunked = np.concatenate(list(demo.iter_frames(s, chunk_frames=7)))
>>> bool((chunked == movie).all())
True
>>> len(s.roi_polygons) == s.n_neurons
True

Writing the small experiment (4 sessions of 600 x 96 x 128, a few seconds)::

    exp_dir = demo.write_demo_experiment("out")  # out/DEMO and out/DEMO_truth

The "hard" preset (:mod:`~calim_helpers.synthetic.hard`) is a test bed for neuron
detection, event detection and neuropil correction: dim, touching, rarely firing
cells of varied size, out-of-focus cells and neurites, neuropil that follows the
activity (``neuropil_strength`` scales it), small transients, badly drawn and
missing expert ROIs. Its truth adds true masks, transients, per-ROI neuropil-free
ΔF/F and noise levels (``HARD_TRUTH_FIELDS``); :mod:`~calim_helpers.synthetic.truth`
has the scorers::

    s = demo.simulate_session(600, (96, 128), None, difficulty="hard", seed=3)
    truth = demo.session_truth(s)       # truth["true_masks"], truth["roi_dff_clean"], ...
    demo.write_demo_experiment("out", name="HARD", difficulty="hard", n_frames=40)
    demo.write_sessions("out", demo.plan_sessions([101, 102]), name="HELDOUT")

>>> h = demo.simulate_session(30, (64, 80), 5, difficulty="hard", pixel_size_um=1.0, seed=2)
>>> t = demo.session_truth(h)
>>> t["true_masks"].shape, t["roi_dff_clean"].shape[1], str(t["difficulty"])
((5, 64, 80), 30, 'hard')
"""

from __future__ import annotations

from calim_helpers.synthetic.activity import (
    Spikes,
    calcium_kernel,
    dff_traces,
    kernel_peak_time,
    spike_trains,
)
from calim_helpers.synthetic.artefacts import bleach_curve, drift_curve, motion_shifts
from calim_helpers.synthetic.experiment import (
    SESSION_NAMES,
    PlannedSession,
    plan_experiment,
    plan_sessions,
    write_demo_experiment,
    write_sessions,
)
from calim_helpers.synthetic.expert_rois import expert_rois, imagej_rois
from calim_helpers.synthetic.hard import hard_neuron_count, hard_somata, simulate_hard_session
from calim_helpers.synthetic.mmstack import write_mmstack
from calim_helpers.synthetic.scene import Somata, neuropil_image, soma_footprints
from calim_helpers.synthetic.session import (
    HARD_TRUTH_FIELDS,
    TRUTH_FIELDS,
    DemoSession,
    ExtraScene,
    iter_frames,
    noise_free_frames,
    render_frames,
    session_truth,
    simulate_session,
)
from calim_helpers.synthetic.truth import (
    mask_iou,
    match_events,
    match_masks,
    polygon_mask,
    session_transients,
    trace_correlation,
    true_masks,
    true_transients,
)

__all__ = [
    "HARD_TRUTH_FIELDS",
    "SESSION_NAMES",
    "TRUTH_FIELDS",
    "DemoSession",
    "ExtraScene",
    "PlannedSession",
    "Somata",
    "Spikes",
    "bleach_curve",
    "calcium_kernel",
    "dff_traces",
    "drift_curve",
    "expert_rois",
    "hard_neuron_count",
    "hard_somata",
    "imagej_rois",
    "iter_frames",
    "kernel_peak_time",
    "mask_iou",
    "match_events",
    "match_masks",
    "motion_shifts",
    "neuropil_image",
    "noise_free_frames",
    "plan_experiment",
    "plan_sessions",
    "polygon_mask",
    "render_frames",
    "session_transients",
    "session_truth",
    "simulate_hard_session",
    "simulate_session",
    "soma_footprints",
    "spike_trains",
    "trace_correlation",
    "true_masks",
    "true_transients",
    "write_demo_experiment",
    "write_mmstack",
    "write_sessions",
]
