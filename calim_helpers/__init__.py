"""CALIM: drift-corrected, normalized calcium-imaging traces from Micro-Manager stacks.

The numerical core of the CALIM pipeline. Modules:

- :mod:`calim_helpers.io` -- find sessions, open Micro-Manager / OME-TIFF stacks lazily;
- :mod:`calim_helpers.registration`, :mod:`calim_helpers.denoise` -- motion correction,
  optional denoising;
- :mod:`calim_helpers.downsample` -- block means;
- :mod:`calim_helpers.rois`, :mod:`calim_helpers.detection` -- Fiji ROIs rasterized as
  ImageJ does, automatic neuron detection;
- :mod:`calim_helpers.traces` -- ROI and background traces;
- :mod:`calim_helpers.baseline`, :mod:`calim_helpers.normalize` -- arPLS, normalizations;
- :mod:`calim_helpers.events`, :mod:`calim_helpers.synchrony` -- events, network events,
  correlations, features;
- :mod:`calim_helpers.figures`, :mod:`calim_helpers.analysis_figures` -- figures;
- :mod:`calim_helpers.pipeline`, :mod:`calim_helpers.runner`, :mod:`calim_helpers.cli`
  -- the notebooks' steps and ``calim run``;
- :mod:`calim_helpers.demo` -- a synthetic experiment with known ground truth.
"""

from calim_helpers.errors import CalimInputError, CalimWarning

__version__ = "0.1.0"

__all__ = ["CalimInputError", "CalimWarning", "__version__"]
