"""Tests of calim_helpers.synthetic.mmstack: the Micro-Manager (MMStack) writer.

Reading the files back goes through tifffile's own Micro-Manager reader, so these tests
check the layout independently of calim_helpers.io.
"""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
import tifffile

from calim_helpers.synthetic import mmstack
from calim_helpers.synthetic.mmstack import write_mmstack


def _stack(nt=25, ny=16, nx=20, seed=0):
    return np.random.default_rng(seed).integers(0, 4000, (nt, ny, nx), dtype=np.uint16)


def test_roundtrip_single_file_is_micromanager(tmp_path):
    stack = _stack()
    files = write_mmstack(tmp_path / "s", "230404_5", iter(stack), n_frames=len(stack),
                          frame_shape=stack.shape[1:], pixel_size_um=0.65, interval_ms=100.0)
    assert [f.name for f in files] == ["230404_5_MMStack_Pos0.ome.tif"]
    with tifffile.TiffFile(files[0]) as tif:  # tifffile's own Micro-Manager reader
        assert tif.is_mmstack and tif.is_ome
        assert tif.series[0].kind == "mmstack"
        np.testing.assert_array_equal(tif.series[0].asarray(), stack)
        assert tif.micromanager_metadata["Summary"]["Frames"] == len(stack)
    meta = json.loads((tmp_path / "s" / "230404_5_MMStack_Pos0_metadata.txt").read_text())
    assert meta["Summary"]["Interval_ms"] == 100.0
    assert meta["FrameKey-3-0-0"]["ElapsedTime-ms"] == pytest.approx(300.0)


def test_continuation_files_split_in_time_order(tmp_path):
    stack = _stack(nt=12)
    files = write_mmstack(tmp_path, "230404_5", iter(stack), n_frames=12, frame_shape=(16, 20),
                          max_file_bytes=12_000)
    assert [f.name for f in files[:3]] == ["230404_5_MMStack_Pos0.ome.tif",
                                           "230404_5_MMStack_Pos0_1.ome.tif",
                                           "230404_5_MMStack_Pos0_2.ome.tif"]
    assert all(f.stat().st_size <= 12_000 for f in files)
    frames = []
    for f in files:
        with open(f, "rb") as fh:
            index_map = tifffile.read_micromanager_metadata(fh, {"IndexMap"})["IndexMap"]
        frames += index_map[:, 2].tolist()
    assert frames == list(range(12))  # every frame once, in order across the files
    with tifffile.TiffFile(files[0]) as tif:  # tifffile gathers the continuation files
        np.testing.assert_array_equal(tif.series[0].asarray(), stack)


def test_writer_streams_blocks_and_frames_alike(tmp_path):
    stack = _stack(nt=6)
    a = write_mmstack(tmp_path / "a", "x", [stack[:4], stack[4], stack[5:]], n_frames=6,
                      frame_shape=(16, 20))
    b = write_mmstack(tmp_path / "b", "x", iter(stack), n_frames=6, frame_shape=(16, 20))
    assert a[0].read_bytes() == b[0].read_bytes()


def test_writer_rejects_wrong_frames(tmp_path):
    with pytest.raises(ValueError, match="uint16"):
        write_mmstack(tmp_path, "x", [np.zeros((4, 4), np.float32)], n_frames=1,
                      frame_shape=(4, 4))
    with pytest.raises(ValueError, match="yielded"):
        write_mmstack(tmp_path, "y", [np.zeros((4, 4), np.uint16)], n_frames=2,
                      frame_shape=(4, 4))
    with pytest.raises(ValueError, match="more than n_frames"):
        write_mmstack(tmp_path, "z", [np.zeros((3, 4, 4), np.uint16)], n_frames=2,
                      frame_shape=(4, 4))
    with pytest.raises(ValueError, match=r"\(y, x\) = \(4, 4\)"):
        write_mmstack(tmp_path, "w", [np.zeros((4, 5), np.uint16)], n_frames=1,
                      frame_shape=(4, 4))


def test_module_doctest():
    result = doctest.testmod(mmstack)
    assert result.attempted >= 3 and result.failed == 0
