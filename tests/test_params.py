"""Tests of calim_helpers.params: one documented source, validated overrides."""

from __future__ import annotations

import re

import pytest

from calim_helpers.errors import CalimInputError
from calim_helpers.params import DEFAULTS_FILE, load_params


def test_defaults_match_spec():
    p = load_params()
    assert p["downsample"] == {"time": 10, "y": 2, "x": 2}
    assert p["background"]["fraction"] == 0.10
    assert p["arpls"] == {"lam": 10.0, "cutoff_s": None, "tol": 1e-5, "max_iter": 100}
    assert p["normalize"] == "dff"
    assert (p["heatmap"]["vmin"], p["heatmap"]["vmax"]) == (0.0, 0.5)


def test_sessions_accept_quoted_ids():
    assert load_params(None, [("sessions", "['230404_5']")])["sessions"] == ["230404_5"]


def test_cutoff_accepts_a_number():
    assert load_params(None, [("arpls.cutoff_s", "20")])["arpls"]["cutoff_s"] == 20.0


def test_every_default_key_is_documented_inline():
    for line in DEFAULTS_FILE.read_text().splitlines():
        if re.match(r"^\s*[A-Za-z_]+:", line):
            assert "#" in line, f"undocumented parameter line: {line!r}"


def test_file_and_cli_overrides(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("downsample:\n  time: 5\n")
    p = load_params(f, [("downsample.x", "4")])
    assert p["downsample"] == {"time": 5, "y": 2, "x": 4}


@pytest.mark.parametrize("pairs, match", [
    ([("downsample.z", "2")], "unknown parameter 'downsample.z'"),
    ([("nope", "2")], "unknown parameter 'nope'"),
    ([("downsample.time", "2.5")], "'downsample.time' must be of type int"),
    ([("downsample.time", "yes")], "'downsample.time' must be of type int"),
    ([("downsample", "3")], "'downsample' must be a mapping"),
    ([("normalize", "max")], "'normalize' must be one of"),
    ([("arpls.cutoff_s", "soon")], "'arpls.cutoff_s' must be of type NoneType"),
    ([("sessions", "230404_5")], "'sessions' must be of type list"),
    ([("sessions", "[230404_5]")], "quoted strings"),
])
def test_bad_overrides_name_the_key(pairs, match):
    with pytest.raises(CalimInputError, match=match):
        load_params(None, pairs)


def test_bad_file(tmp_path):
    with pytest.raises(CalimInputError, match="parameter file not found"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("downsample: [1, 2\n")
    with pytest.raises(CalimInputError, match=r"bad\.yaml: not valid YAML"):
        load_params(bad)
