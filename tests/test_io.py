"""Tests of calim_helpers.io: session discovery and lazy opening of image stacks.

The Micro-Manager writer used to build inputs is tested in tests/test_mmstack.py.
"""

from __future__ import annotations

import json
import re
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


# ----------------------------------------------------------------- reading


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


def test_pages_read_by_block_equal_the_file_under_any_slicing_and_threads(tmp_path):
    """The page reader against tifffile reading the whole file: every kind of index
    dask and xarray pass, across continuation files, and many threads at once."""
    stack = _stack(nt=41, seed=4)
    files, _ = _write(tmp_path / "s", stack=stack, max_file_bytes=12_000)
    assert len(files) > 2
    movie = io.open_movie(tmp_path / "s", chunks={"time": 6})
    assert movie.data.chunks[0][:2] == (6, 6)
    with tifffile.TiffFile(files[0]) as tif:
        series = tif.series[0]
        assert isinstance(io._SeriesPages.of(series), io._SeriesPages)
        expected = series.asarray()
    np.testing.assert_array_equal(expected, stack)
    for key in [(slice(None),), (slice(3, 40, 7),), (slice(None, None, -3),),
                (5,), (-1, slice(2, 9), 4), ([0, 17, 40],), (np.array([39, 2]), 3)]:
        np.testing.assert_array_equal(movie.data[key].compute(scheduler="synchronous"),
                                      stack[key], err_msg=str(key))
    for _ in range(3):  # 8 threads reading the same file handles at once
        total = movie.data.astype(np.int64).sum(axis=(1, 2)).compute(scheduler="threads",
                                                                     num_workers=8)
        np.testing.assert_array_equal(total, stack.astype(np.int64).sum(axis=(1, 2)))
    movie.close()


def test_series_not_of_2d_pages_is_read_through_zarr(tmp_path):
    """RGB pages (3-D each) are not for the page reader; the movie still opens."""
    rgb = np.random.default_rng(5).integers(0, 255, (4, 8, 10, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    with tifffile.TiffFile(tmp_path / "rgb.tif") as tif:
        assert io._SeriesPages.of(tif.series[0]) is None
        np.testing.assert_array_equal(
            io._series_to_dask(tif.series[0], 3).compute(scheduler="synchronous"), rgb)


def _two_channels(tmp_path, ome=False):
    rng = np.random.default_rng(6)
    stack = rng.integers(0, 4000, (13, 2, 16, 20), dtype=np.uint16)  # (t, c, y, x)
    folder = tmp_path / "230404_5"
    folder.mkdir()
    if ome:
        path = folder / "230404_5.ome.tif"
        tifffile.imwrite(path, stack, ome=True,
                         metadata={"axes": "TCYX", "Channel": {"Name": ["GCaMP", "tdTomato"]},
                                   "TimeIncrement": 0.1})
    else:
        path = folder / "230404_5.tif"
        tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "TCYX", "finterval": 0.1})
    return path, stack


@pytest.mark.parametrize("ome", [False, True])
@pytest.mark.parametrize("page_reader", [True, False])
def test_one_channel_of_a_multichannel_stack_is_read(tmp_path, monkeypatch, ome, page_reader):
    path, stack = _two_channels(tmp_path, ome)
    if not page_reader:  # the zarr path, as for a series whose pages are not all 2-D
        monkeypatch.setattr(io._SeriesPages, "of", classmethod(lambda cls, s, **kw: None))
    names = " 'GCaMP', 1 'tdTomato'" if ome else ", 1"
    with pytest.raises(CalimInputError, match=re.escape(
            f"{path}: the stack has 2 channels (0{names}); choose the one to analyse with the "
            "parameter load.channel (0 to 1; calim run -p load.channel 0)")):
        io.open_movie(path.parent)
    for channel in (0, 1):
        movie = io.open_movie(path.parent, chunks={"time": 4}, channel=channel)
        assert movie.dims == ("time", "y", "x") and movie.attrs["channel"] == channel
        assert movie.attrs["frame_interval_s"] == pytest.approx(0.1)
        np.testing.assert_array_equal(movie.values, stack[:, channel])
        np.testing.assert_array_equal(movie[5:11:3, 2].values, stack[5:11:3, channel, 2])
        movie.close()
    with pytest.raises(CalimInputError, match="load.channel is 2 but the stack has 2 channel"):
        io.open_movie(path, channel=2)


def test_the_channel_reader_reads_only_its_pages(tmp_path):
    path, stack = _two_channels(tmp_path)
    with tifffile.TiffFile(path) as tif:
        reader = io._SeriesPages.of(tif.series[0], channel=(1, 1))
        assert reader.shape == (13, 16, 20)
        np.testing.assert_array_equal(reader.page_index, np.arange(1, 26, 2))
        np.testing.assert_array_equal(reader[2:5], stack[2:5, 1])


def test_a_single_channel_stack_accepts_channel_0_only(tmp_path):
    _write(tmp_path / "s", stack=_stack(nt=5))
    movie = io.open_movie(tmp_path / "s", channel=0)
    assert movie.attrs["channel"] == -1 and movie.shape == (5, 16, 20)  # nothing selected
    with pytest.raises(CalimInputError, match="load.channel is 1 but the stack has 1 channel"
                                              r"\(s\) \(0 'Default'\)"):
        io.open_movie(tmp_path / "s", channel=1)
    with pytest.raises(ValueError, match="channel must be an integer or None, got True"):
        io.open_movie(tmp_path / "s", channel=True)


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


def _plain_session(folder: Path) -> Path:
    """A session folder with a plain 3-frame TIFF stack and an ROI set."""
    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / "a.tif", _stack(nt=3, ny=4, nx=4))
    _touch(folder / "RoiSet.zip")
    return folder


def _calim_messages(record) -> list[str]:
    return sorted(str(w.message) for w in record if w.category is CalimWarning)


def test_misnamed_folders_holding_tiffs_warn_once_each(tmp_path):
    exp = tmp_path / "e"
    _plain_session(exp / "04-04-23" / "230404_1")
    misnamed = {  # folder -> what its warning says is expected
        exp / "04-04-23" / "230404_2b": "expected a '<yymmdd>_<n>' name (e.g. 230404_1)",
        exp / "04-04-23" / "230404-3": "expected a '<yymmdd>_<n>' name (e.g. 230404_1)",
        exp / "04-04-2023": "expected a 'dd-mm-yy' name",
        exp / "2023-04-05": "expected a 'dd-mm-yy' name",
        exp / "230404_7": "expected a 'dd-mm-yy' name",  # a session without its date folder
    }
    _plain_session(exp / "04-04-23" / "230404_2b")
    _plain_session(exp / "04-04-23" / "230404-3")
    _plain_session(exp / "04-04-2023" / "230404_4")
    _plain_session(exp / "2023-04-05" / "230405_1")
    _plain_session(exp / "230404_7")
    # silent: no TIFF, hidden, or not date-like with TIFFs only further down
    (exp / "notebooks").mkdir()
    (exp / "notebooks" / "01_load.py").write_text("# notes\n")
    (exp / "empty").mkdir()
    (exp / "04-04-23" / "analysis_old").mkdir()
    _plain_session(exp / ".Trash-04-04-23" / "230404_1")  # date-like, hidden
    _plain_session(exp / "04-04-23" / ".230404_1.tmp")
    _plain_session(exp / "figures" / "session_1")
    (exp / "04-04-23" / "trash").mkdir()
    (exp / "04-04-23" / "trash" / "._a.tif").write_bytes(b"\0" * 8)  # macOS resource fork
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        sessions = io.find_sessions(exp)
    assert [s.id for s in sessions] == ["04-04-23_230404_1"]  # no new name accepted
    messages = _calim_messages(record)
    assert len(messages) == len(misnamed)
    for folder, expected in misnamed.items():
        (message,) = [m for m in messages if m.startswith(f"{folder}: ")]
        assert "holds TIFF files" in message or "sub-folders hold TIFF files" in message
        assert expected in message
    date_message = next(m for m in messages if m.startswith(f"{exp / '04-04-2023'}: "))
    assert "sub-folders hold TIFF files (230404_4)" in date_message
    assert "'<yymmdd>_<n>' session folders" in date_message
    assert "inside date folder 04-04-23" in next(m for m in messages if "230404_2b" in m)


def test_only_misnamed_folders_is_an_error_naming_them(tmp_path):
    exp = tmp_path / "e"
    _plain_session(exp / "04-04-2023" / "230404_4")
    _plain_session(exp / "04-04-23" / "230404_2b")
    with pytest.warns(CalimWarning) as record:
        with pytest.raises(CalimInputError, match=r"no session found .*named otherwise: "
                           r"04-04-2023, 04-04-23/230404_2b$"):
            io.find_sessions(exp)
    assert len(_calim_messages(record)) == 2


def test_valid_layouts_warn_nothing(tmp_path):
    exp = tmp_path / "e"
    _plain_session(exp / "04-04-23" / "230404_1")
    _write(exp / "04-04-23" / "230404_10", "230404_10", stack=_stack(nt=2, ny=4, nx=4))
    _touch(exp / "04-04-23" / "230404_10" / "Rois" / "Rois.zip")
    _write(exp / "01-12-22" / "221201_1", "221201_1", stack=_stack(nt=2, ny=4, nx=4))
    _touch(exp / "01-12-22" / "221201_1" / "ROIs" / "ROIs.zip")
    (exp / "notes").mkdir()
    (exp / "04-04-23" / "analysis_old").mkdir()
    _plain_session(exp / ".hidden" / "230404_1")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert len(io.find_sessions(exp)) == 3
    assert _calim_messages(record) == []
    from calim_helpers import demo

    demo_exp = demo.write_demo_experiment(tmp_path / "demo", n_frames=20, frame_shape=(16, 20))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert len(io.find_sessions(demo_exp)) == 4
    assert _calim_messages(record) == []


@pytest.mark.parametrize("method, phrase", [
    ("AVG", "ignored, an average-intensity projection"),
    ("MAX", "ignored, a maximum-intensity projection"),
    ("MIN", "ignored, a minimum-intensity projection"),
    ("SUM", "ignored, a sum-intensity projection"),
    ("STD", "ignored, a standard-deviation-intensity projection"),
    ("MED", "ignored, a median-intensity projection"),
])
def test_projection_note_article(tmp_path, method, phrase):
    folder = tmp_path / "230404_5"
    _write(folder, stack=_stack(nt=3, ny=4, nx=4))
    _projection(folder / f"{method}_230404_5.tif", _stack(nt=3, ny=4, nx=4))
    with pytest.warns(CalimWarning) as record:
        io.find_stack_files(folder)
    (message,) = _calim_messages(record)
    assert f"{method}_230404_5.tif: {phrase} saved beside the stack" in message


# ----------------------------------------------------------------- real-world inputs


def _rename_position(folder: Path, files: list[Path], label: str) -> list[Path]:
    """Give the files of write_mmstack the names Micro-Manager uses for position ``label``."""
    renamed = []
    for f in files:
        renamed.append(f.rename(f.with_name(f.name.replace("_MMStack_Pos0", f"_MMStack_{label}"))))
    meta = folder / "230404_5_MMStack_Pos0_metadata.txt"
    meta.rename(folder / f"230404_5_MMStack_{label}_metadata.txt")
    return renamed


@pytest.mark.parametrize("label", ["1-Pos_000_000", "Default"])  # MM 1.4 grid, MM 2.0
def test_micromanager_position_names_and_continuations(tmp_path, label):
    folder = tmp_path / "e" / "04-04-23" / "230404_5"
    stack = _stack(nt=12)
    files, _ = _write(folder, stack=stack, max_file_bytes=5_000)  # one frame per file
    files = _rename_position(folder, files, label)
    assert len(files) == 12 and files[10].name == f"230404_5_MMStack_{label}_10.ome.tif"
    _touch(folder / "RoiSet.zip")
    stack_files, meta = io.find_stack_files(folder)
    assert stack_files == tuple(files)  # numeric order: _2 before _10
    assert meta.name == f"230404_5_MMStack_{label}_metadata.txt"
    (session,) = io.find_sessions(tmp_path / "e")
    assert session.problem == "" and session.stack_files == tuple(files)
    for source in (session, folder, files[0]):
        movie = io.open_movie(source, chunks={"time": 5})
        np.testing.assert_array_equal(movie.values, stack)
        assert movie.attrs["frame_interval_s"] == pytest.approx(0.1)
    files[4].unlink()
    with pytest.raises(CalimInputError, match=rf"missing: 230404_5_MMStack_{label}_4\.ome\.tif"):
        io.find_stack_files(folder)


def _imagej(path: Path, stack, *, pixel=None, **meta) -> Path:
    """An ImageJ hyperstack with the description keys ImageJ 1.53t writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, stack, imagej=True,
                     resolution=None if pixel is None else (1 / pixel, 1 / pixel),
                     metadata={"axes": "TYX", **{k: v for k, v in meta.items() if v is not None}})
    return path


@pytest.mark.parametrize(
    ("unit", "pixel", "finterval", "tunit", "pixel_um", "interval_s"),
    [
        ("micron", 0.65, 250, "msec", 0.65, 0.25),  # as ImageJ 1.53t saves µm and ms
        ("\\u00B5m", 0.65, 0.5, None, 0.65, 0.5),  # escaped µ; seconds by default
        ("nm", 650.0, 2, "min", 0.65, 120.0),
    ],
)
def test_imagej_hyperstack_calibration(tmp_path, unit, pixel, finterval, tunit, pixel_um,
                                       interval_s):
    stack = _stack(nt=10)
    path = _imagej(tmp_path / "230404_5" / "230404_5.tif", stack, pixel=pixel, unit=unit,
                   finterval=finterval, tunit=tunit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "frame interval unknown", no unit complaint
        movie = io.open_movie(path.parent)
    np.testing.assert_array_equal(movie.values, stack)
    assert movie.attrs["pixel_size_um"] == pytest.approx(pixel_um, rel=1e-6)
    assert movie.attrs["frame_interval_s"] == pytest.approx(interval_s)
    np.testing.assert_allclose(movie.time.values, np.arange(10) * interval_s)
    assert movie.attrs["metadata_sources"] == ["pixel size: ImageJ resolution and unit",
                                               "frame interval: ImageJ finterval"]


def test_imagej_uncalibrated_and_unknown_units(tmp_path):
    path = _imagej(tmp_path / "a.tif", _stack(nt=4), pixel=1.0, unit="pixel")
    with pytest.warns(CalimWarning, match="frame interval unknown"):
        movie = io.open_movie(path)
    assert np.isnan(movie.attrs["pixel_size_um"]) and movie.attrs["time_units"] == "frame"
    # ImageJ 1.53t saves an uncalibrated stack without unit= and 1 pixel per inch
    tifffile.imwrite(tmp_path / "c.tif", _stack(nt=4), imagej=True, resolution=(1.0, 1.0),
                     resolutionunit="INCH", metadata={"axes": "ZYX"})
    with pytest.warns(CalimWarning, match="frame interval unknown"):
        movie = io.open_movie(tmp_path / "c.tif")
    assert np.isnan(movie.attrs["pixel_size_um"]) and movie.attrs["metadata_sources"] == []
    path = _imagej(tmp_path / "b.tif", _stack(nt=4), pixel=0.5, unit="furlong", finterval=1,
                   tunit="fortnight")
    with pytest.warns(CalimWarning) as record:
        movie = io.open_movie(path)
    messages = " | ".join(str(w.message) for w in record)
    assert "ImageJ pixel size unit 'furlong' not understood; ImageJ pixel size ignored" in messages
    assert "unit 'fortnight' not understood" in messages and "frame interval unknown" in messages
    assert np.isnan(movie.attrs["pixel_size_um"]) and np.isnan(movie.attrs["frame_interval_s"])


def _fiji_ome_xml(nt, ny, nx, *, pixels_attrs="", delta_t=None) -> str:
    """OME-XML laid out as the Bio-Formats exporter of Fiji writes it."""
    planes = "" if delta_t is None else "".join(
        f'<Plane DeltaT="{t * delta_t}" DeltaTUnit="s" TheC="0" TheT="{t}" TheZ="0"/>'
        for t in range(nt))
    tiffdata = "".join(f'<TiffData FirstC="0" FirstT="{t}" FirstZ="0" IFD="{t}" '
                       'PlaneCount="1"/>' for t in range(nt))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" '
        'Creator="OME Bio-Formats 6.11.1"><Image ID="Image:0" Name="230404_5">'
        f'<Pixels BigEndian="false" DimensionOrder="XYCZT" ID="Pixels:0" Interleaved="false" '
        f'SignificantBits="16" SizeC="1" SizeT="{nt}" SizeX="{nx}" SizeY="{ny}" SizeZ="1" '
        f'Type="uint16"{pixels_attrs}><Channel ID="Channel:0:0" SamplesPerPixel="1">'
        f"<LightPath/></Channel>{tiffdata}{planes}</Pixels></Image></OME>"
    )


def _fiji_ome(path: Path, stack, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    xml = _fiji_ome_xml(*stack.shape, **kw).encode()  # UTF-8, as Bio-Formats writes it
    tifffile.imwrite(path, stack, description=xml, metadata=None)
    return path


@pytest.mark.parametrize(
    ("pixels_attrs", "delta_t", "pixel_um", "interval_s", "interval_source"),
    [
        (' PhysicalSizeX="0.325" PhysicalSizeXUnit="µm" TimeIncrement="0.25" '
         'TimeIncrementUnit="s"', None, 0.325, 0.25, "OME TimeIncrement"),
        (' PhysicalSizeX="325.0" PhysicalSizeXUnit="nm" TimeIncrement="250.0" '
         'TimeIncrementUnit="ms"', None, 0.325, 0.25, "OME TimeIncrement"),
        (' PhysicalSizeX="0.325"', 0.04, 0.325, 0.04, "OME DeltaT"),  # OME default unit: µm
    ],
)
def test_fiji_ome_tiff_calibration(tmp_path, pixels_attrs, delta_t, pixel_um, interval_s,
                                   interval_source):
    stack = _stack(nt=9)
    path = _fiji_ome(tmp_path / "230404_5" / "230404_5.ome.tif", stack,
                     pixels_attrs=pixels_attrs, delta_t=delta_t)
    movie = io.open_movie(path.parent)
    np.testing.assert_array_equal(movie.values, stack)
    assert movie.attrs["pixel_size_um"] == pytest.approx(pixel_um)
    assert movie.attrs["frame_interval_s"] == pytest.approx(interval_s)
    np.testing.assert_allclose(movie.x.values, np.arange(20) * pixel_um)
    assert any(interval_source in src for src in movie.attrs["metadata_sources"])


@pytest.mark.parametrize(
    ("where", "bits", "saturation", "source"),
    [
        ("ome", 12, 4095.0, "saturation: OME SignificantBits 12"),
        ("mm", 14, 16383.0, "saturation: Micro-Manager summary BitDepth 14"),
        ("mm", 16, 65535.0, "saturation: Micro-Manager summary BitDepth 16"),
        ("none", None, 65535.0, None),
    ],
)
def test_saturation_value_follows_the_cameras_bit_depth(tmp_path, where, bits, saturation,
                                                        source):
    stack = _stack(nt=6)
    if where == "ome":
        xml = _fiji_ome_xml(*stack.shape).replace('SignificantBits="16"',
                                                  f'SignificantBits="{bits}"')
        path = tmp_path / "s" / "s.ome.tif"
        path.parent.mkdir()
        tifffile.imwrite(path, stack, description=xml.encode(), metadata=None)
        movie = io.open_movie(path)
    elif where == "mm":
        _write(tmp_path / "s", stack=stack, summary={"BitDepth": bits})
        movie = io.open_movie(tmp_path / "s")
    else:
        path = _imagej(tmp_path / "s" / "s.tif", stack, pixel=0.5, unit="micron",
                       finterval=0.1)
        movie = io.open_movie(path)
    assert movie.attrs["saturation_value"] == saturation
    sources = [s for s in movie.attrs["metadata_sources"] if s.startswith("saturation")]
    assert sources == ([source] if source else [])


def test_a_bit_depth_the_dtype_cannot_hold_is_skipped(tmp_path):
    stack = _stack(nt=6)
    _write(tmp_path / "s", stack=stack, summary={"BitDepth": 20})
    with pytest.warns(CalimWarning) as record:
        movie = io.open_movie(tmp_path / "s")
    # metadata.txt repeats the summary: skipped too, without a second warning
    said = [str(w.message) for w in record if issubclass(w.category, CalimWarning)]
    assert len(said) == 1 and said[0].endswith(
        "_MMStack_Pos0.ome.tif: Micro-Manager summary BitDepth 20 does not fit uint16 data "
        "and is ignored"), said
    assert movie.attrs["saturation_value"] == 65535.0
    floats = tmp_path / "f.tif"
    tifffile.imwrite(floats, stack.astype(np.float32), imagej=True,
                     metadata={"axes": "TYX", "finterval": 0.1})
    assert np.isnan(io.open_movie(floats).attrs["saturation_value"])


def _projection(path: Path, stack, how="max") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = stack.max(axis=0) if how == "max" else stack.mean(axis=0).astype(np.float32)
    tifffile.imwrite(path, image, imagej=True)
    return path


def test_projections_and_other_tiffs_beside_a_micromanager_stack(tmp_path):
    folder = tmp_path / "e" / "04-04-23" / "230404_5"
    files, stack = _write(folder)
    _projection(folder / "MAX_230404_5_MMStack_Pos0.ome.tif", stack)
    _projection(folder / "AVG_230404_5_MMStack_Pos0.ome.tif", stack, how="mean")
    _imagej(folder / "230404_5_MMStack_Pos0-1.tif", stack[:5])  # a Fiji duplicate
    _touch(folder / "RoiSet.zip")
    with pytest.warns(CalimWarning) as record:
        stack_files, _ = io.find_stack_files(folder)
    assert stack_files == tuple(files)
    notes = sorted(str(w.message) for w in record if w.category is CalimWarning)
    assert len(notes) == 3
    assert "AVG_230404_5_MMStack_Pos0.ome.tif: ignored, an average-intensity projection" in (
        notes[1])
    assert "MAX_230404_5_MMStack_Pos0.ome.tif: ignored, a maximum-intensity projection" in notes[2]
    assert notes[0].endswith("230404_5_MMStack_Pos0-1.tif: ignored, not part of the "
                             "Micro-Manager stack 230404_5_MMStack_Pos0")
    with pytest.warns(CalimWarning) as record:
        (session,) = io.find_sessions(tmp_path / "e")
    assert sorted(str(w.message) for w in record if w.category is CalimWarning) == notes
    assert session.problem == "" and session.stack_files == tuple(files)
    assert sorted(session.notes) == notes
    np.testing.assert_array_equal(io.open_movie(session).values, stack)


def test_plain_stack_chosen_among_single_images(tmp_path):
    folder = tmp_path / "230404_5"
    stack = _stack(nt=8)
    _imagej(folder / "230404_5.tif", stack, pixel=0.65, unit="micron", finterval=0.1)
    _projection(folder / "MAX_230404_5.tif", stack)
    _projection(folder / "mip.tif", stack)  # a projection without Fiji's prefix
    tifffile.imwrite(folder / "brightfield.tif", _stack(nt=1)[0])
    with pytest.warns(CalimWarning) as record:
        stack_files, _ = io.find_stack_files(folder)
    assert [p.name for p in stack_files] == ["230404_5.tif"]
    notes = sorted(str(w.message) for w in record if w.category is CalimWarning)
    assert [n.split(": ignored, ")[0].rsplit("/", 1)[-1] for n in notes] == [
        "MAX_230404_5.tif", "brightfield.tif", "mip.tif"]
    assert "mip.tif: ignored, a single image (axes YX, shape (16, 20)), not a time series" in (
        notes[2])
    with pytest.warns(CalimWarning) as record:
        np.testing.assert_array_equal(io.open_movie(folder).values, stack)
    assert sorted(str(w.message) for w in record if w.category is CalimWarning) == notes


def test_only_single_images_or_several_stacks_are_errors(tmp_path):
    folder = tmp_path / "a"
    _projection(folder / "mip.tif", _stack(nt=3))
    _projection(folder / "MAX_x.tif", _stack(nt=3))
    tifffile.imwrite(folder / "ref.tif", _stack(nt=1)[0])
    with pytest.raises(CalimInputError, match=r"no TIFF time series: mip\.tif is a single image"):
        io.find_stack_files(folder)
    folder = tmp_path / "b"
    _imagej(folder / "one.tif", _stack(nt=4))
    _imagej(folder / "two.tif", _stack(nt=4))
    with pytest.raises(CalimInputError, match=r"several TIFF time series \(one\.tif, two\.tif\)"):
        io.find_stack_files(folder)


def test_open_movie_named_file_with_other_tiffs(tmp_path):
    folder = tmp_path / "s"
    one, two = _stack(nt=4, seed=1), _stack(nt=6, seed=2)
    _imagej(folder / "one.tif", one)
    _imagej(folder / "two.tif", two)
    _projection(folder / "MAX_one.tif", one)
    with pytest.warns(CalimWarning, match="frame interval unknown"):
        np.testing.assert_array_equal(io.open_movie(folder / "two.tif").values, two)
    # a named Micro-Manager file: its own acquisition only, beside another one
    files, stack = _write(folder, stack=_stack(nt=12, seed=3), max_file_bytes=5_000)
    _write(folder, "230404_55", stack=_stack(nt=3, seed=4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        movie = io.open_movie(files[0])
    assert movie.attrs["source_files"] == [str(f) for f in files]
    np.testing.assert_array_equal(movie.values, stack)
    with pytest.raises(CalimInputError, match="several acquisitions/positions"):
        io.open_movie(folder)


def _cut(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _truncated_mm(folder: Path) -> Path:
    files, _ = _write(folder)
    with tifffile.TiffFile(files[0]) as tif:
        frame = tif.series[0].pages[2]
        keep = frame.dataoffsets[0] + frame.databytecounts[0]
    _cut(files[0], keep)  # header, summary and three frames survive; the index map is lost
    return files[0]


def _truncated_imagej(folder: Path) -> Path:
    path = _imagej(folder / "stack.tif", _stack(), pixel=0.65, unit="micron", finterval=0.1)
    with tifffile.TiffFile(path) as tif:
        start = tif.pages.first.dataoffsets[0]
    _cut(path, start + 16 * 20 * 2 + 100)  # one whole frame and part of the second
    return path


def _truncated_imagej_late(folder: Path) -> Path:
    path = _imagej(folder / "stack.tif", _stack(), pixel=0.65, unit="micron", finterval=0.1)
    with tifffile.TiffFile(path) as tif:
        start = tif.pages.first.dataoffsets[0]
    _cut(path, start + 17 * 16 * 20 * 2 + 300)  # 17 whole frames and part of the 18th
    return path


def _truncated_fiji_ome(folder: Path) -> Path:
    path = _fiji_ome(folder / "stack.ome.tif", _stack(), pixels_attrs=' PhysicalSizeX="0.5"')
    with tifffile.TiffFile(path) as tif:
        keep = tif.pages[4].dataoffsets[0]  # the OME-XML, first page and 4 frames of pixels
    _cut(path, keep)  # the other pages, stored after the pixels, are lost
    return path


def _truncated_bare(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "stack.tif"
    tifffile.imwrite(path, _stack(), metadata=None)  # no metadata at all
    with tifffile.TiffFile(path) as tif:
        keep = tif.pages[3].offset  # 3 whole frames; the third links to a lost page
    _cut(path, keep)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_truncated_mm, r"230404_5_MMStack_Pos0\.ome\.tif: file truncated: expected 25 frames "
                        r"\(Micro-Manager summary 'Frames'\), found 3$"),
        (_truncated_imagej, r"stack\.tif: file truncated: expected 25 frames \(ImageJ images=\), "
                            r"found 1$"),
        (_truncated_imagej_late, r"stack\.tif: file truncated: expected 25 frames \(ImageJ "
                                 r"images=\), found 17$"),
        (_truncated_fiji_ome, r"stack\.ome\.tif: file truncated: expected 25 frames \(OME SizeT\), "
                              r"found 1$"),
        (_truncated_bare, r"stack\.tif: file truncated: the file ends where its frame 3 should "
                          r"begin \(\d+ bytes\); found 3 complete frames$"),
    ],
    ids=["micromanager", "imagej", "imagej-late", "fiji-ome", "no-metadata"],
)
def test_truncated_stack_says_expected_and_found(tmp_path, make, message):
    path = make(tmp_path / "s")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "frame interval unknown" is not the point
        with pytest.raises(CalimInputError, match=message):
            io.open_movie(path.parent)
        with pytest.raises(CalimInputError, match=message):
            io.open_movie(path)


def test_twenty_frame_movie_opens(tmp_path):
    files, stack = _write(tmp_path / "s", stack=_stack(nt=20))
    movie = io.open_movie(tmp_path / "s")
    assert movie.sizes == {"time": 20, "y": 16, "x": 20}
    np.testing.assert_array_equal(movie.values, stack)
    np.testing.assert_allclose(movie.time.values, np.arange(20) * 0.1)


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
    with pytest.raises(CalimInputError, match=r"230404_5_MMStack_Pos0\.ome\.tif: file truncated: "
                                              r"expected 25 frames \(Micro-Manager summary "
                                              r"'Frames'\), found 12$"):
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
    tifffile.imwrite(tmp_path / "b" / "tz.tif", _stack(nt=12).reshape(6, 2, 16, 20),
                     imagej=True, metadata={"axes": "TZYX"})
    with pytest.raises(CalimInputError, match=r"tz\.tif: expected a 3-D .* axes 'TZYX' "
                                              r"\(several slices or positions"):
        io.open_movie(tmp_path / "b" / "tz.tif")
    # several channels: one is chosen with load.channel (test_one_channel_of_a_multichannel...)


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


def test_movie_file_takes_blocks_in_any_order_and_any_shape(tmp_path):
    import tifffile

    rng = np.random.default_rng(1)
    values = rng.uniform(-10, 70000, (9, 5, 7))  # beyond uint16 at both ends
    path = tmp_path / "m.ome.tif"
    with io.MovieFile(path, values.shape, np.uint16, pixel_size_um=(0.65, 0.65),
                      frame_interval_s=0.1) as out:
        out[6:9] = values[6:9]  # whole frames, last first
        out[0:6, 2:5, 3:7] = values[0:6, 2:5, 3:7]  # a block of rows and columns
        out[0:6, 0:2] = values[0:6, 0:2]  # rows
        out[0:6, 2:5, 0:3] = values[0:6, 2:5, 0:3]
        assert not path.exists()  # nothing under the final name before commit
        assert len(list(tmp_path.glob(".*.part-*"))) == 1  # what a re-run clears
        assert out.commit() == path
    expected = np.clip(np.rint(values), 0, 65535).astype(np.uint16)
    np.testing.assert_array_equal(tifffile.imread(path), expected)
    back = io.open_movie(path)
    assert back.attrs["pixel_size_um"] == pytest.approx(0.65)
    assert back.attrs["frame_interval_s"] == pytest.approx(0.1)
    back.close()
    # plain ImageJ ignores the OME-XML; it reads the pixel size from the resolution tags
    # (1 / 0.65 µm in pixels per cm; ImageJ 1.53t shows "0.65 µm" for such a file)
    with tifffile.TiffFile(path) as tif:
        xres = tif.pages[0].tags["XResolution"].value
        assert xres[0] / xres[1] == pytest.approx(1e4 / 0.65, rel=1e-6)
        assert tif.pages[0].tags["ResolutionUnit"].value == 3  # centimetre
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ome.tif"]


def test_movie_file_leaves_nothing_when_the_work_fails(tmp_path):
    with pytest.raises(ZeroDivisionError), io.MovieFile(
            tmp_path / "m.ome.tif", (4, 3, 3), np.float32, pixel_size_um=None,
            frame_interval_s=None) as out:
        out[0:2] = np.ones((2, 3, 3))
        1 / 0  # noqa: B018 - the failure of the computation feeding the file
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="shape must be"):
        io.MovieFile(tmp_path / "m.ome.tif", (0, 3, 3), np.float32, pixel_size_um=None,
                     frame_interval_s=None)
    assert list(tmp_path.iterdir()) == []


def test_pixel_type_conversion_rounds_and_clips():
    got = io.as_pixel_type(np.array([-3.0, 0.49, 0.5, 1.5, 2.51, np.nan, 1e6]), np.uint16)
    np.testing.assert_array_equal(got, [0, 0, 0, 2, 3, 0, 65535])  # half to even, as rint
    assert got.dtype == np.uint16
    assert io.as_pixel_type(np.array([1.25]), np.float32).dtype == np.float32


def test_write_movie_round_trips_with_its_calibration(tmp_path):
    import dask.array as da
    import xarray as xr

    rng = np.random.default_rng(0)
    values = rng.normal(100, 5, (7, 6, 8)).astype(np.float32)
    movie = xr.DataArray(da.from_array(values, chunks=(3, 6, 8)), dims=("time", "y", "x"))
    path = io.write_movie(movie, tmp_path / "s_corrected.ome.tif", pixel_size_um=(1.3, 1.3),
                          frame_interval_s=0.5)
    back = io.open_movie(path)
    np.testing.assert_array_equal(back.values, values)
    assert back.attrs["pixel_size_um"] == pytest.approx(1.3)
    assert back.attrs["frame_interval_s"] == pytest.approx(0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s_corrected.ome.tif"]
    plain = io.write_movie(movie, tmp_path / "u.ome.tif", pixel_size_um=None,
                           frame_interval_s=None)
    with pytest.warns(CalimWarning, match="frame interval unknown"):
        assert io.open_movie(plain).sizes["time"] == 7


# --------------------------------------------------------------------------- PNG


@pytest.mark.parametrize("channels", [4, 3])
def test_png_bytes_decode_to_the_same_pixels_and_resolution_with_pillow(channels, tmp_path):
    """Pillow, an independent decoder that checks every chunk's CRC, reads back the
    exact pixels, the colour type and the dpi; save_png writes those bytes."""
    from PIL import Image, ImageFile, PngImagePlugin

    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(37, 53, channels), dtype=np.uint8)
    image[:10] = 255  # flat rows as in a figure, as well as noise
    path = io.save_png(image, tmp_path / "a.png", dpi=72)
    assert path.read_bytes() == io.png_bytes(image, dpi=72)
    with Image.open(path) as im:
        im.load()
        assert im.mode == ("RGBA" if channels == 4 else "RGB")
        assert np.array_equal(np.asarray(im), image)
        assert im.info["dpi"] == pytest.approx((72, 72), abs=0.01)
    assert not list(tmp_path.glob("*.tmp*"))
    # the CRCs are real: Pillow rejects a resolution chunk with a byte changed
    data = bytearray(io.png_bytes(image, dpi=72))
    data[data.index(b"pHYs") + 5] ^= 0xFF
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(bytes(data))
    with pytest.raises(SyntaxError, match="checksum"):
        PngImagePlugin.PngImageFile(damaged)


def test_png_bytes_rejects_what_is_not_an_8_bit_colour_image():
    with pytest.raises(ValueError, match="uint8 of shape"):
        io.png_bytes(np.zeros((4, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8 of shape"):
        io.png_bytes(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8 of shape"):
        io.png_bytes(np.zeros((0, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="dpi must be a positive number"):
        io.png_bytes(np.zeros((4, 4, 3), dtype=np.uint8), dpi=0)
