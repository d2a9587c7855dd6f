"""The synthetic-data generator behind :mod:`calim_helpers.demo`, one module per concern.

- :mod:`~calim_helpers.synthetic.scene` — soma footprints (:class:`Somata`) and the
  neuropil background
- :mod:`~calim_helpers.synthetic.activity` — spike trains, the calcium kernel, ΔF/F traces
- :mod:`~calim_helpers.synthetic.artefacts` — photobleaching, additive drift, rigid motion
- :mod:`~calim_helpers.synthetic.expert_rois` — imperfect "expert" polygons as Fiji ROIs
- :mod:`~calim_helpers.synthetic.session` — :class:`DemoSession`: simulation, rendering
  of the camera frames, ground truth
- :mod:`~calim_helpers.synthetic.hard` — the "hard" preset: dim, touching, rarely firing
  cells, out-of-focus cells, neurites, local neuropil activity, bad and missing ROIs
- :mod:`~calim_helpers.synthetic.truth` — true masks and transients, scorers
  (mask matching at IoU >= 0.5, event F1, trace correlation)
- :mod:`~calim_helpers.synthetic.experiment` — planning the demo experiment and writing
  it to disk with its ground truth
- :mod:`~calim_helpers.synthetic.mmstack` — the Micro-Manager multipage-TIFF writer
- ``calim_helpers.synthetic._common`` (private) — random-stream numbers, argument checks

The public names are re-exported by :mod:`calim_helpers.demo`; import them from there.
"""
