"""CALIM: drift-corrected, normalized calcium-imaging traces from Micro-Manager stacks.

The science, one module per pipeline step, in the order data flows
(files -> io -> registration/denoise/downsample -> rois/detection -> traces -> baseline
-> normalize -> correction -> events/synchrony -> analysis -> aggregate/stats):

- :mod:`calim_helpers.io` -- find sessions, open stacks lazily, write outputs atomically;
- :mod:`calim_helpers.registration` -- motion correction (:func:`correct_motion`);
- :mod:`calim_helpers.denoise`, :mod:`calim_helpers.downsample` -- optional denoising,
  block means;
- :mod:`calim_helpers.rois` -- Fiji ROIs rasterized as ImageJ does, coverage weights;
- :mod:`calim_helpers.detection` -- automatic neuron detection (:func:`detect_rois`);
- :mod:`calim_helpers.traces` -- ROI and background traces in one pass;
- :mod:`calim_helpers.baseline` -- arPLS (Baek et al. 2015), λ <-> cut-off period;
- :mod:`calim_helpers.noise` -- the one robust noise estimate;
- :mod:`calim_helpers.normalize` -- dff / session / zscore, dff_raw;
- :mod:`calim_helpers.correction` -- traces -> two arPLS fits -> normalization;
- :mod:`calim_helpers.events`, :mod:`calim_helpers.synchrony` -- events, network events,
  correlations, clusters, features;
- :mod:`calim_helpers.analysis` -- all of the above for one session in one call;
- :mod:`calim_helpers.aggregate`, :mod:`calim_helpers.stats` -- experiment tables,
  statistics across sessions and conditions.

Above the science: :mod:`calim_helpers.plots` (figures by subject),
:mod:`calim_helpers.workflow` (experiments, steps, fan-out, notebooks and their views),
:mod:`calim_helpers.params` (the one parameter source, validated),
:mod:`calim_helpers.cli` (the ``calim`` command) and :mod:`calim_helpers.demo` (a
synthetic experiment with known ground truth).
"""

from calim_helpers.errors import CalimInputError, CalimParameterError, CalimWarning

__version__ = "0.3.0"

__all__ = ["CalimInputError", "CalimParameterError", "CalimWarning", "__version__"]
