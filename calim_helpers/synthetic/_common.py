"""Random-stream numbers and argument checks shared by the synthetic-data modules.

Every random component of a synthetic session draws from its own stream
``np.random.default_rng([seed, stream])`` (the camera noise of frame ``t`` from
``default_rng([seed, _STREAM_CAMERA, t])``), so components are independent of one
another and of how a movie is cut into chunks. The numbers below are part of the
generated data: changing one changes every demo experiment.
"""

from __future__ import annotations

from collections.abc import Sequence

# Independent random streams, one per component: default_rng([seed, stream]).
_STREAM_SOMATA = 1
_STREAM_NEUROPIL = 2
_STREAM_SPIKES = 3
_STREAM_DRIFT = 4
_STREAM_MOTION = 5
_STREAM_ROIS = 6
_STREAM_BRIGHTNESS = 7
_STREAM_CAMERA = 8
# Streams of the "hard" preset only (calim_helpers.synthetic.hard).
_STREAM_HARD_SOMATA = 11
_STREAM_HARD_BRIGHTNESS = 12
_STREAM_HARD_CONTAMINANTS = 13
_STREAM_HARD_SPIKES = 14
_STREAM_HARD_ROIS = 15


def _check_shape(frame_shape: Sequence[int]) -> tuple[int, int]:
    shape = tuple(int(v) for v in frame_shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"frame_shape must be two positive ints (y, x), got {frame_shape!r}")
    return shape  # type: ignore[return-value]


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def _check_range(name: str, value: Sequence[float], *, low: float = 0.0) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not low <= lo <= hi:
        raise ValueError(f"{name} must be (low, high) with {low} <= low <= high, got {value!r}")
    return lo, hi


def _check_recording(n_frames: int, frame_shape: Sequence[int], frame_interval_s: float,
                     gain: float, read_noise: float, roi_type: str) -> tuple[int, int]:
    """Check what every simulated session needs; return the frame shape."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames!r}")
    shape = _check_shape(frame_shape)
    _check_positive("frame_interval_s", frame_interval_s)
    _check_positive("gain", gain)
    if read_noise < 0:
        raise ValueError(f"read_noise must be >= 0, got {read_noise!r}")
    if roi_type not in ("polygon", "freehand"):
        raise ValueError(f"roi_type must be 'polygon' or 'freehand', got {roi_type!r}")
    return shape
