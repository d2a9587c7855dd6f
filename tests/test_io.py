"""Tests of calim_helpers.io: session discovery, lazy opening, Micro-Manager writing."""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile

from calim_helpers import io
from calim_helpers.errors import CalimInputError, CalimWarning
from calim_helpers.synthetic.mmstack import write_mmstack


def _stack(nt=25, ny=16, nx=20, seed=0):
    return np.random.default_rng(seed).integers(0, 4000, (nt, ny, nx), dtype=np.uint16)


def _write(folder: Path, prefix="230404_5", stack=None, **kw):
    stack = _stack() if stack is None else stack
    kw.setdefault("pixel_size_um", 0.65)
    kw.setdefault("interval_ms", 100.0)
    files = write_mmstack(folder, prefix, iter(stack), n_frames=len(stack),
                          frame_shape=stack.shape[1:], **kw)
    return files, stack


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip archive
    return path


# ----------------------------------------------------------------- writing and reading


def test_roundtrip_single_file_is_micromanager(tmp_path):
    files, stack = _write(tmp_path / "s")
    assert [f.name for f in files] == ["230404_5_MMStack_Pos0.ome.tif"]
    with tifffile.TiffFile(files[0]) as tif:  # tifffile's own Micro-Manager reader
        assert tif.is_mmstack and tif.is_ome
        assert tif.series[0].kind == "mmstack"
        np.testing.assert_array_equal(tif.series[0].asarray(), stack)
        assert tif.micromanager_metadata["Summary"]["Frames"] == len(stack)
    meta = json.loads((tmp_path / "s" / "230404_5_MMStack_Pos0_metadata.txt").read_text())
    assert meta["Summary"]["Interval_ms"] == 100.0
    assert meta["FrameKey-3-0-0"]["ElapsedTime-ms"] == pytest.approx(300.0)


def test_open_movie_lazy_with_physical_coords(tmp_path):
    _write(tmp_path / "s")
    movie = io.open_movie(tmp_path / "s")
    assert movie.dims == ("time", "y", "x")
    assert isinstance(movie.data, da.Array)
    assert movie.dtype == np.uint16
    np.testing.assert_allclose(movie.time.values, np.arange(25) * 0.1)
    assert movie.time.attrs["units"] == "s"
    np.testing.assert_allclose(movie.x.values, np.arange(20) * 0.65)
    assert movie.attrs["pixel_size_um"] == pytest.approx(0.65)
    assert movie.attrs["frame_interval_s"] == pytest.approx(0.1)
    assert json.loads(movie.attrs["acquisition_metadata"])["Prefix"] == "230404_5"


def test_multifile_stack_roundtrip_and_order(tmp_path):
    stack = _stack(nt=30)
    files, _ = _write(tmp_path / "s", stack=stack, max_file_bytes=9_000)
    assert len(files) > 3
    assert files[1].name == "230404_5_MMStack_Pos0_1.ome.tif"
    stack_files, meta = io.find_stack_files(tmp_path / "s")
    assert stack_files == tuple(files)  # numeric order: _2 before _10
    assert meta.name == "230404_5_MMStack_Pos0_metadata.txt"
    movie = io.open_movie(tmp_path / "s", chunks={"time": 7})
    np.testing.assert_array_equal(movie.values, stack)
    np.testing.assert_array_equal(movie.isel(time=slice(11, 19)).values, stack[11:19])


def test_plain_tiff_stack_is_accepted(tmp_path):
    stack = _stack(nt=6)
    (tmp_path / "s").mkdir()
    tifffile.imwrite(tmp_path / "s" / "stack.tif", stack)
    with pytest.warns(CalimWarning, match="frame interval unknown"):
        movie = io.open_movie(tmp_path / "s" / "stack.tif")
    np.testing.assert_array_equal(movie.values, stack)
    assert movie.attrs["time_units"] == "frame"


def test_interval_from_summary_then_from_frame_times(tmp_path):
    _write(tmp_path / "a", interval_ms=None, summary={"Interval_ms": 50.0})
    assert io.open_movie(tmp_path / "a").attrs["frame_interval_s"] == pytest.approx(0.05)
    # Micro-Manager writes Interval_ms = 0 for "as fast as possible": use ElapsedTime-ms
    _write(tmp_path / "b", interval_ms=None)
    mfile = tmp_path / "b" / "230404_5_MMStack_Pos0_metadata.txt"
    meta = json.loads(mfile.read_text())
    for k in range(25):
        meta[f"FrameKey-{k}-0-0"]["ElapsedTime-ms"] = 33.0 * k + (0.4 if k % 2 else 0.0)
    mfile.write_text(json.dumps(meta))
    movie = io.open_movie(tmp_path / "b")
    assert movie.attrs["frame_interval_s"] == pytest.approx(0.033, abs=5e-4)
    assert any("ElapsedTime" in s for s in movie.attrs["metadata_sources"])


def test_open_movie_reads_no_pixels(tmp_path):
    files, stack = _write(tmp_path / "s")
    movie = io.open_movie(tmp_path / "s")
    # change frame 3 on disk after opening: a lazy movie shows the new pixels
    with tifffile.TiffFile(files[0]) as tif:
        offset = tif.series[0].pages[3].dataoffsets[0]
    pattern = np.arange(16 * 20, dtype="<u2").reshape(16, 20)
    with open(files[0], "r+b") as fh:
        fh.seek(offset)
        fh.write(pattern.tobytes())
    np.testing.assert_array_equal(movie.isel(time=3).values, pattern)
    np.testing.assert_array_equal(movie.isel(time=4).values, stack[4])


def test_writer_rejects_wrong_frames(tmp_path):
    with pytest.raises(ValueError, match="uint16"):
        write_mmstack(tmp_path, "x", [np.zeros((4, 4), np.float32)], n_frames=1,
                      frame_shape=(4, 4))
    with pytest.raises(ValueError, match="yielded"):
        write_mmstack(tmp_path, "y", [np.zeros((4, 4), np.uint16)], n_frames=2,
                      frame_shape=(4, 4))


# ----------------------------------------------------------------- discovery


def _experiment(root: Path) -> Path:
    exp = root / "GLUT_DNQX"
    small = _stack(nt=3, ny=4, nx=4)
    _write(exp / "04-04-23" / "230404_9", "230404_9", stack=small)
    _write(exp / "04-04-23" / "230404_10", "230404_10", stack=small)
    _write(exp / "04-04-23" / "230404_5", "230404_5", stack=small)
    _write(exp / "01-12-22" / "221201_1", "221201_1", stack=small)
    _touch(exp / "04-04-23" / "230404_9" / "ROIs" / "ROIs.zip")
    _touch(exp / "04-04-23" / "230404_10" / "Rois" / "Rois.zip")
    _touch(exp / "04-04-23" / "230404_5" / "RoiSet.zip")
    (exp / "notes").mkdir()
    (exp / "04-04-23" / "analysis_old").mkdir()
    return exp


def test_find_sessions_layout_and_order(tmp_path):
    exp = _experiment(tmp_path)
    with pytest.warns(CalimWarning, match="no ROI set"):
        sessions = io.find_sessions(exp)
    assert [s.id for s in sessions] == ["01-12-22_221201_1", "04-04-23_230404_5",
                                        "04-04-23_230404_9", "04-04-23_230404_10"]
    by = {s.name: s for s in sessions}
    assert by["221201_1"].roi_file is None
    assert by["230404_9"].roi_file.relative_to(by["230404_9"].path).as_posix() == "ROIs/ROIs.zip"
    assert by["230404_10"].roi_file.name == "Rois.zip"
    assert by["230404_5"].roi_file.name == "RoiSet.zip"
    s = by["230404_9"]
    assert s.experiment == "GLUT_DNQX" and s.date == "04-04-23"
    assert s.stack_files[0].name == "230404_9_MMStack_Pos0.ome.tif"
    assert s.metadata_file.name == "230404_9_MMStack_Pos0_metadata.txt"
    with pytest.raises(AttributeError):  # frozen
        s.name = "other"
    with pytest.warns(CalimWarning):
        assert io.find_sessions(exp) == sessions  # deterministic


def test_roi_file_name_case_insensitive(tmp_path):
    folder = tmp_path / "e" / "04-04-23" / "230404_5"
    _write(folder, stack=_stack(nt=2, ny=4, nx=4))
    _touch(folder / "rois" / "ROIS.ZIP")
    (s,) = io.find_sessions(tmp_path / "e")
    assert s.roi_file.name == "ROIS.ZIP"


def test_several_roi_sets_fail_that_session_only(tmp_path):
    folder = tmp_path / "e" / "04-04-23" / "230404_5"
    _write(folder, stack=_stack(nt=2, ny=4, nx=4))
    _touch(folder / "ROIs" / "ROIs.zip")
    _touch(folder / "RoiSet.zip")
    _write(tmp_path / "e" / "04-04-23" / "230404_6", "230404_6", stack=_stack(nt=2, ny=4, nx=4))
    with pytest.warns(CalimWarning, match="several ROI sets"):
        bad, good = io.find_sessions(tmp_path / "e")
    assert "several ROI sets" in bad.problem and good.problem == ""
    with pytest.raises(CalimInputError, match=r"230404_5: several ROI sets"):
        io.open_movie(bad)
    assert io.open_movie(good).shape == (2, 4, 4)


def test_session_date_mismatch_warns(tmp_path):
    folder = tmp_path / "e" / "04-04-23" / "230405_5"
    _write(folder, "230405_5", stack=_stack(nt=2, ny=4, nx=4))
    _touch(folder / "ROIs" / "ROIs.zip")
    with pytest.warns(CalimWarning, match="does not match date folder"):
        io.find_sessions(tmp_path / "e")


def test_experiment_errors(tmp_path):
    with pytest.raises(CalimInputError, match="experiment folder not found"):
        io.find_sessions(tmp_path / "nope")
    (tmp_path / "empty" / "04-04-23").mkdir(parents=True)
    with pytest.raises(CalimInputError, match="no session found"):
        io.find_sessions(tmp_path / "empty")
    (tmp_path / "e2" / "04-04-23" / "230404_1").mkdir(parents=True)
    with pytest.warns(CalimWarning, match="230404_1: no Micro-Manager stack"):
        (s,) = io.find_sessions(tmp_path / "e2")
    with pytest.raises(CalimInputError, match="230404_1: no Micro-Manager stack"):
        io.open_movie(s)


# ----------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    with pytest.raises(CalimInputError, match=r"nope\.ome\.tif: stack file not found"):
        io.open_movie(tmp_path / "nope.ome.tif")


def test_corrupt_tiff(tmp_path):
    (tmp_path / "s").mkdir()
    bad = tmp_path / "s" / "230404_5_MMStack_Pos0.ome.tif"
    bad.write_bytes(b"this is not a TIFF file at all" * 10)
    with pytest.raises(CalimInputError, match=r"230404_5_MMStack_Pos0\.ome\.tif: not a readable"):
        io.open_movie(tmp_path / "s")


def test_truncated_micromanager_file(tmp_path):
    files, stack = _write(tmp_path / "s")
    data = files[0].read_bytes()
    files[0].write_bytes(data[: len(data) // 2])  # loses the second half and the index map
    with pytest.raises(CalimInputError, match=r"230404_5_MMStack_Pos0\.ome\.tif: frame 12 lies "
                                              r"beyond the end of the file .* file truncated"):
        io.open_movie(tmp_path / "s")


def test_truncated_plain_tiff(tmp_path):
    (tmp_path / "s").mkdir()
    path = tmp_path / "s" / "stack.tif"
    tifffile.imwrite(path, _stack(nt=8), metadata=None)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 300])
    with pytest.raises(CalimInputError, match=r"stack\.tif.*truncated"):
        io.open_movie(path)


def test_zero_filled_missing_pages_are_refused(tmp_path):
    files, _ = _write(tmp_path / "s")
    # point one index-map entry past the end of the file: tifffile would zero-fill it
    raw = bytearray(files[0].read_bytes())
    (imap_at,) = struct.unpack_from("<I", raw, 12)
    struct.pack_into("<I", raw, imap_at + 8 + 5 * 4 * 7 + 16, len(raw) + 10_000)
    files[0].write_bytes(bytes(raw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CalimInputError, match=r"1 of 25 frames are missing \(first missing "
                                                  r"frame 7\)"):
            io.open_movie(tmp_path / "s")


def test_not_a_time_series(tmp_path):
    (tmp_path / "a").mkdir()
    tifffile.imwrite(tmp_path / "a" / "one.tif", _stack(nt=1)[0])
    with pytest.raises(CalimInputError, match=r"one\.tif: a single image"):
        io.open_movie(tmp_path / "a" / "one.tif")
    (tmp_path / "b").mkdir()
    tifffile.imwrite(tmp_path / "b" / "tc.tif", _stack(nt=12).reshape(6, 2, 16, 20),
                     imagej=True, metadata={"axes": "TCYX"})
    with pytest.raises(CalimInputError, match=r"tc\.tif: expected a 3-D"):
        io.open_movie(tmp_path / "b" / "tc.tif")


def test_continuation_file_missing_in_the_middle(tmp_path):
    files, _ = _write(tmp_path / "s", stack=_stack(nt=12), max_file_bytes=5_000)
    files[1].unlink()
    with pytest.raises(CalimInputError, match=r"continuation file\(s\) missing: "
                                              r"230404_5_MMStack_Pos0_1\.ome\.tif"):
        io.find_stack_files(tmp_path / "s")


def test_last_continuation_file_missing(tmp_path):
    files, _ = _write(tmp_path / "s", stack=_stack(nt=12), max_file_bytes=5_000)
    files[-1].unlink()
    with pytest.raises(CalimInputError,
                       match=r"1 of 12 frames are missing \(first missing frame 11\)"):
        io.open_movie(tmp_path / "s")


def test_continuation_files_out_of_order(tmp_path):
    files, _ = _write(tmp_path / "s", stack=_stack(nt=12), max_file_bytes=5_000)
    a, b = files[1], files[2]
    tmp = a.with_name("swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    with pytest.raises(CalimInputError, match=r"Pos0_2\.ome\.tif: continuation files out of "
                                              "order"):
        io.open_movie(tmp_path / "s")


def test_unreadable_metadata(tmp_path):
    _write(tmp_path / "s")
    (tmp_path / "s" / "230404_5_MMStack_Pos0_metadata.txt").write_text("{ not json")
    with pytest.raises(CalimInputError, match=r"metadata\.txt: unreadable Micro-Manager "
                                              "metadata"):
        io.open_movie(tmp_path / "s")


def test_several_positions_is_an_error(tmp_path):
    _write(tmp_path / "s", stack=_stack(nt=2, ny=4, nx=4))
    (tmp_path / "s" / "230404_5_MMStack_Pos1.ome.tif").write_bytes(b"")
    with pytest.raises(CalimInputError, match="several acquisitions/positions"):
        io.find_stack_files(tmp_path / "s")


def test_close_releases_the_files(tmp_path):
    import os

    files, _ = _write(tmp_path / "s")

    def open_fds():
        fd_dir = "/proc/self/fd"
        return [os.readlink(f"{fd_dir}/{f}") for f in os.listdir(fd_dir)
                if os.path.exists(f"{fd_dir}/{f}")]

    movie = io.open_movie(tmp_path / "s")
    assert movie.isel(time=0).values.shape == (16, 20)
    assert str(files[0]) in open_fds()
    movie.close()
    assert str(files[0]) not in open_fds()
