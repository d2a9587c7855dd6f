"""CALIM: drift-corrected, normalized calcium-imaging traces from Micro-Manager stacks.

The numerical core of the CALIM pipeline. Modules:

- :mod:`calim_helpers.io` -- find sessions, open Micro-Manager / OME-TIFF stacks lazily;
- :mod:`calim_helpers.rois` -- read Fiji ROIs, rasterize them as ImageJ does, coverage weights;
- :mod:`calim_helpers.demo` -- a synthetic experiment with known ground truth.
"""

from calim_helpers.errors import CalimInputError, CalimWarning

__version__ = "0.1.0"

__all__ = ["CalimInputError", "CalimWarning", "__version__"]
