"""Tests of calim_helpers.params: one documented source, every value checked before a run."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from calim_helpers import resources
from calim_helpers.errors import CalimInputError, CalimParameterError
from calim_helpers.params import (
    DEFAULTS_FILE,
    SCHEMA,
    check_against_sessions,
    defaults,
    load_params,
    merge_params,
    too_short,
    validate_params,
)

ROOT = Path(__file__).resolve().parents[1]


def _leaves(tree, prefix=""):
    """Dotted key -> value of every parameter."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _leaves(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _refusal(pairs) -> str:
    with pytest.raises(CalimParameterError) as info:
        load_params(None, pairs)
    message = str(info.value)
    assert isinstance(info.value, CalimInputError)
    assert "\n" not in message and message == message.strip(), repr(message)
    assert "Failed validating" not in message and "jsonschema" not in message
    return message


# ----------------------------------------------------------------------------- defaults


def test_defaults_match_spec():
    p = load_params()
    assert p["downsample"] == {"time": 10, "y": 2, "x": 2}
    assert p["background"]["fraction"] == 0.10
    assert p["arpls"] == {"lam": 10.0, "cutoff_s": None, "tol": 1e-5, "max_iter": 100}
    assert p["normalize"] == "dff"
    assert (p["heatmap"]["vmin"], p["heatmap"]["vmax"]) == (0.0, 0.5)
    assert p["statistics"] == {"unit": "session"}
    assert defaults() == p


def test_defaults_file_is_packaged_and_params_default_links_to_it():
    assert DEFAULTS_FILE == resources.defaults_file()
    package = Path(resources.__file__).parent
    assert DEFAULTS_FILE == package / "data" / "default.yaml"
    assert DEFAULTS_FILE.is_file() and not DEFAULTS_FILE.is_symlink()
    link = ROOT / "params" / "default.yaml"
    assert link.is_symlink(), "params/default.yaml must link to the packaged defaults"
    assert os.readlink(link) == "../calim_helpers/data/default.yaml"  # relative: git keeps it
    assert link.read_bytes() == DEFAULTS_FILE.read_bytes()
    assert load_params(defaults=link) == load_params()


def test_every_default_key_is_documented_inline_once():
    seen = []
    section = ""
    for line in DEFAULTS_FILE.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^(\s*)([A-Za-z_]+):", line)
        if not m:
            continue
        assert "#" in line, f"undocumented parameter line: {line!r}"
        if m[1]:
            seen.append(f"{section}.{m[2]}")
        else:
            section = m[2]
            seen.append(section)
    leaves = _leaves(yaml.safe_load(DEFAULTS_FILE.read_text(encoding="utf-8")))
    sections = {k.split(".")[0] for k in leaves if "." in k}
    assert len(seen) == len(set(seen)), "a key is written twice"
    assert set(seen) == set(leaves) | sections


def test_statistics_unit_sits_near_heatmap():
    keys = list(yaml.safe_load(DEFAULTS_FILE.read_text(encoding="utf-8")))
    assert abs(keys.index("statistics") - keys.index("heatmap")) == 1


# ----------------------------------------------------------------------------- schema


def _schema_keys(schema, prefix=""):
    out = set()
    for key, sub in schema.get("properties", {}).items():
        if sub.get("type") == "object":
            out |= _schema_keys(sub, f"{prefix}{key}.")
        else:
            out.add(f"{prefix}{key}")
    return out


def _walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def test_schema_is_valid_covers_every_key_and_holds_no_default():
    Draft202012Validator.check_schema(SCHEMA)
    assert _schema_keys(SCHEMA) == set(_leaves(load_params()))
    assert not any("default" in node for node in _walk(SCHEMA)), "defaults live in the yaml"


def test_the_defaults_file_itself_is_checked(tmp_path):
    text = DEFAULTS_FILE.read_text(encoding="utf-8")
    bad = tmp_path / "defaults.yaml"
    bad.write_text(text.replace("  lam: 10.0 ", "  lam: -1.0 "), encoding="utf-8")
    with pytest.raises(CalimParameterError, match=r"^parameter arpls\.lam = -1\.0: must be > 0$"):
        load_params(defaults=bad)
    bad.write_text(text.replace("  y: 2 ", "  "), encoding="utf-8")
    with pytest.raises(CalimParameterError, match=r"^parameter downsample\.y is missing$"):
        load_params(defaults=bad)


# ----------------------------------------------------------------------------- accepted


def test_file_and_cli_overrides(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("downsample:\n  time: 5\narpls:\n  tol: 1e-4\n")
    p = load_params(f, [("downsample.x", "4")])
    assert p["downsample"] == {"time": 5, "y": 2, "x": 4}
    assert p["arpls"]["tol"] == 1e-4  # YAML 1.2 float; PyYAML alone reads "1e-4" as text


def test_later_overrides_win_and_cross_checks_see_the_final_tree(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("heatmap:\n  vmin: 1.0\n")  # alone, vmin > vmax
    p = load_params(f, [("heatmap.vmax", "2"), ("downsample.time", "3"), ("downsample.time", "4")])
    assert p["heatmap"] == {"vmin": 1.0, "vmax": 2.0}
    assert p["downsample"]["time"] == 4


def test_example_file_validates_and_changes_what_a_lab_changes():
    example = ROOT / "params" / "example.yaml"
    changed = set(_leaves(yaml.safe_load(example.read_text(encoding="utf-8"))))
    assert {"arpls.lam", "normalize", "registration.enabled", "sessions"} <= changed
    p = load_params(example)
    base = _leaves(load_params())
    assert all(_leaves(p)[k] != base[k] for k in changed)


@pytest.mark.parametrize("text, expected", [
    ("230404_5", ["230404_5"]),
    ("230404_5,230404_9", ["230404_5", "230404_9"]),
    (" 230404_5 , 230404_9 ", ["230404_5", "230404_9"]),
    ("['230404_5']", ["230404_5"]),
    ('["230404_5", "230404_9"]', ["230404_5", "230404_9"]),
    ("[230404_5]", ["230404_5"]),
    ("04-04-23_230404_5", ["04-04-23_230404_5"]),
    ("04-04-23_230404_5,230404_9", ["04-04-23_230404_5", "230404_9"]),
    ("[]", []),
    ("", []),
])
def test_sessions_on_the_command_line_are_text(text, expected):
    assert load_params(None, [("sessions", text)])["sessions"] == expected


def test_sessions_in_a_file_must_be_quoted(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text('sessions: ["230404_5", "04-04-23_230404_9"]\n')
    assert load_params(f)["sessions"] == ["230404_5", "04-04-23_230404_9"]
    f.write_text("sessions: [230404_5]\n")
    with pytest.raises(CalimParameterError) as info:
        load_params(f)
    assert str(info.value).startswith("parameter sessions = [2304045]: ")
    assert "quoted" in str(info.value) and "'230404_5'" in str(info.value)
    f.write_text('sessions: "230404_5"\n')
    with pytest.raises(CalimParameterError, match=r"^parameter sessions = '230404_5': must be a "
                                                  r"list of quoted session ids"):
        load_params(f)


@pytest.mark.parametrize("text", ["2304x", "230404", "230404_5_1", "4-4-23_230404_5",
                                  "230404-5"])
def test_a_malformed_session_id_is_named(text):
    message = _refusal([("sessions", f"230404_9,{text}")])
    assert message.startswith(f"parameter sessions = ['230404_9', '{text}']: '{text}' is not a "
                              f"session id")


def test_ints_become_floats_for_float_parameters():
    p = load_params(None, [("arpls.lam", "100"), ("arpls.cutoff_s", "20"),
                           ("heatmap.vmax", "2"), ("registration.max_shift_px", "5")])
    for value in (p["arpls"]["lam"], p["arpls"]["cutoff_s"], p["heatmap"]["vmax"],
                  p["registration"]["max_shift_px"]):
        assert type(value) is float
    assert p["arpls"]["lam"] == 100.0
    assert type(p["downsample"]["time"]) is int


@pytest.mark.parametrize("key, text", [
    ("background.fraction", "1"), ("background.seed", "0"), ("detection.iou_threshold", "1"),
    ("synchrony.cluster_threshold", "2"), ("synchrony.alpha", "0.999"),
    ("figures.dpi", "20"), ("figures.dpi", "1200"), ("denoise.size", "1"),
    ("denoise.size", "5"), ("denoise.sigma_px", "0"), ("denoise.sigma_frames", "0"),
    ("trim_start", "0"), ("events.min_amplitude", "0"), ("events.threshold", "0"),
    ("qc.snr_threshold", "0"), ("arpls.cutoff_s", "null"), ("registration.max_shift_px", "null"),
    ("registration.grid", "[1, 8]"), ("compute.scheduler", "synchronous"),
    ("compute.scheduler", "tcp://10.0.0.5:8786"), ("compute.scheduler", "tls://[::1]:8786"),
    ("statistics.unit", "cell"), ("normalize", "zscore"), ("heatmap.vmin", "-1"),
    ("registration.method", "piecewise"), ("rois.source", "expert"),
    ("denoise.method", "temporal_gaussian"), ("registration.enabled", "false"),
])
def test_edge_values_are_accepted(key, text):
    leaves = _leaves(load_params(None, [(key, text)]))
    assert leaves[key] == yaml.safe_load(text)


def test_python_values_are_taken_as_they_are():
    p = load_params(None, [("downsample.time", 5), ("sessions", ["230404_5"])])
    assert p["downsample"]["time"] == 5 and p["sessions"] == ["230404_5"]


def test_a_section_left_empty_in_a_file_changes_nothing(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("arpls:\n  # lam: 100\n")
    assert load_params(f) == load_params()


# ----------------------------------------------------------------------------- refused

RANGES = [
    ("downsample.time", "0", ">= 1"), ("downsample.y", "0", ">= 1"), ("downsample.x", "-2", ">= 1"),
    ("background.fraction", "0", "> 0 and <= 1"), ("background.fraction", "2", "> 0 and <= 1"),
    ("background.seed", "-1", ">= 0"),
    ("arpls.lam", "-5", "> 0"), ("arpls.lam", "0", "> 0"),
    ("arpls.cutoff_s", "0", "null or > 0"), ("arpls.cutoff_s", "-20", "null or > 0"),
    ("arpls.tol", "0", "> 0"), ("arpls.max_iter", "0", ">= 1"),
    ("trim_start", "-1", ">= 0"), ("load.chunk_time", "0", ">= 1"),
    ("registration.upsample_factor", "0", ">= 1"),
    ("registration.template_frames", "0", ">= 1"),
    ("registration.max_shift_px", "0", "null or > 0"),
    ("registration.grid", "[0, 4]", "each entry must be >= 1"),
    ("registration.grid", "[4, 2.5]", "each entry must be an integer"),
    ("registration.grid", "[4]", "two integers"),
    ("registration.grid", "[4, 4, 4]", "two integers"),
    ("denoise.sigma_px", "-0.5", ">= 0"), ("denoise.sigma_frames", "-1", ">= 0"),
    ("denoise.size", "4", "odd"), ("denoise.size", "0", ">= 1"),
    ("detection.diameter_um", "0", "> 0"),
    ("detection.iou_threshold", "0", "> 0 and <= 1"),
    ("detection.iou_threshold", "1.5", "> 0 and <= 1"),
    ("events.threshold", "-1", ">= 0"), ("events.prominence", "-1", ">= 0"),
    ("events.min_duration_s", "-1", ">= 0"), ("events.merge_gap_s", "-0.1", ">= 0"),
    ("events.min_amplitude", "-0.01", ">= 0"),
    ("synchrony.bin_frames", "0", ">= 1"), ("synchrony.n_shuffles", "0", ">= 1"),
    ("synchrony.alpha", "0", "> 0 and < 1"), ("synchrony.alpha", "1", "> 0 and < 1"),
    ("synchrony.cluster_threshold", "0", "> 0 and <= 2"),
    ("synchrony.cluster_threshold", "2.5", "> 0 and <= 2"),
    ("qc.snr_threshold", "-1", ">= 0"),
    ("figures.dpi", "19", ">= 20 and <= 1200"), ("figures.dpi", "1201", ">= 20 and <= 1200"),
    ("compute.parallel_sessions", "0", ">= 1"),
    ("compute.scheduler", "gpu", "threads, synchronous or a dask cluster address"),
    ("compute.scheduler", "processes", "threads, synchronous or a dask cluster address"),
    ("compute.scheduler", "tcp://10.0.0.5", "threads, synchronous or a dask cluster address"),
    ("normalize", "max", "one of dff, session, zscore"),
    ("registration.method", "affine", "one of rigid, piecewise"),
    ("denoise.method", "wavelet", "one of none, gaussian, median, temporal_gaussian"),
    ("rois.source", "manual", "one of expert, auto, auto_if_missing"),
    ("statistics.unit", "roi", "one of session, cell"),
    ("heatmap.vmin", "0.5", "must be < heatmap.vmax = 0.5"),
    ("heatmap.vmax", "-1", "must be < heatmap.vmax = -1.0"),
]


@pytest.mark.parametrize("key, text, allowed", RANGES)
def test_out_of_range_values_and_choices_are_refused_naming_the_key(key, text, allowed):
    message = _refusal([(key, text)])
    named = "heatmap.vmin" if key.startswith("heatmap") else key
    assert message.startswith(f"parameter {named} = "), message
    assert allowed in message, message


def test_the_message_format():
    assert _refusal([("arpls.lam", "-5")]) == "parameter arpls.lam = -5: must be > 0"
    assert (_refusal([("normalize", "max")])
            == "parameter normalize = 'max': must be one of dff, session, zscore")
    assert (_refusal([("background.fraction", "2")])
            == "parameter background.fraction = 2: must be > 0 and <= 1")


INT_KEYS = sorted(k for k, v in _leaves(yaml.safe_load(DEFAULTS_FILE.read_text("utf-8"))).items()
                  if type(v) is int)
FLOAT_KEYS = sorted(k for k, v in _leaves(yaml.safe_load(DEFAULTS_FILE.read_text("utf-8"))).items()
                    if type(v) is float)


def test_the_key_lists_are_not_empty():
    assert {"downsample.time", "figures.dpi", "background.seed"} <= set(INT_KEYS)
    assert {"arpls.lam", "heatmap.vmin"} <= set(FLOAT_KEYS)


@pytest.mark.parametrize("key", INT_KEYS)
@pytest.mark.parametrize("text", ["true", "no", "2.0", "2.5", "ten"])
def test_integers_refuse_bools_and_floats(key, text):
    assert _refusal([(key, text)]).endswith(": must be an integer")


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("text, what", [("true", "a number"), ("soon", "a number"),
                                        (".nan", "a finite number"),
                                        (".inf", "a finite number")])
def test_numbers_refuse_bools_text_and_non_finite_values(key, text, what):
    assert re.search(rf": must be {what}( or null)?$", _refusal([(key, text)]))


@pytest.mark.parametrize("key", ["registration.enabled", "figures.per_roi"])
def test_switches_refuse_numbers(key):
    assert _refusal([(key, "1")]) == f"parameter {key} = 1: must be true or false"


@pytest.mark.parametrize("pairs, message", [
    ([("downsample.z", "2")],
     "unknown parameter 'downsample.z' = 2: the keys of downsample are time, y, x"),
    ([("downsample.tme", "2")], "did you mean downsample.time?"),
    ([("nope", "2")], "unknown parameter 'nope' = 2: the top-level keys are sessions, "),
    ([("arpls.lam.x", "2")], "unknown parameter 'arpls.lam.x' = 2: arpls.lam is a value"),
    ([("downsample", "3")], "parameter downsample = 3: must be a mapping of time, y, x"),
])
def test_unknown_keys_and_misplaced_values_are_named(pairs, message):
    assert message in _refusal(pairs)


def test_unknown_key_in_a_file(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("arpls:\n  lamda: 100\n")
    with pytest.raises(CalimParameterError, match=r"unknown parameter 'arpls\.lamda' = 100: .*"
                                                  r"did you mean arpls\.lam\?"):
        load_params(f)


def test_the_first_problem_in_file_order_is_reported_whatever_the_override_order():
    pairs = [("figures.dpi", "1"), ("normalize", "max"), ("arpls.lam", "-5")]
    first = _refusal(pairs)
    assert first == _refusal(pairs[::-1]) == "parameter arpls.lam = -5: must be > 0"


def test_validate_params_does_not_modify_its_input():
    tree = load_params()
    tree["arpls"]["lam"] = 100
    before = copy.deepcopy(tree)
    out = validate_params(tree)
    assert tree == before and type(tree["arpls"]["lam"]) is int
    assert type(out["arpls"]["lam"]) is float


def test_merge_params_does_not_modify_its_inputs():
    base = load_params()
    update = {"downsample": {"time": 3}}
    before = (copy.deepcopy(base), copy.deepcopy(update))
    merged = merge_params(base, update)
    assert (base, update) == before
    assert merged["downsample"] == {"time": 3, "y": 2, "x": 2}


def test_bad_file(tmp_path):
    with pytest.raises(CalimInputError, match="parameter file not found"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("downsample: [1, 2\n")
    with pytest.raises(CalimInputError, match=r"bad\.yaml: not valid YAML"):
        load_params(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(CalimInputError, match="must be a mapping of keys"):
        load_params(bad)


# ----------------------------------------------------------------------------- sessions


def test_sessions_long_enough_pass():
    p = load_params()  # downsample.time 10, template_frames 200
    assert check_against_sessions(p, {}) == {}
    assert check_against_sessions(p, {"04-04-23_230404_5": 1500, "04-04-23_230404_9": 30}) == {}
    assert check_against_sessions(p, {"230404_5": 100}) == {}  # template clipped
    assert p["registration"]["template_frames"] > 100


def test_a_downsample_longer_than_a_session_leaves_only_that_session_out():
    p = load_params(None, [("downsample.time", "200")])
    short = check_against_sessions(p, {"04-04-23_230404_5": 1500, "04-04-23_230404_9": 150})
    assert list(short) == ["04-04-23_230404_9"]
    assert short["04-04-23_230404_9"].startswith("150 frames, 0 after downsampling")
    assert ">= 600 native frames" in short["04-04-23_230404_9"]
    assert "downsample.time <= 50" in short["04-04-23_230404_9"]


@pytest.mark.parametrize("frames, down", [(29, 2), (20, 2), (10, 1)])
def test_sessions_with_fewer_than_three_downsampled_frames_are_named(frames, down):
    p = load_params()
    short = check_against_sessions(p, {"230404_5": 1500, "230404_9": frames, "230405_1": 900})
    assert list(short) == ["230404_9"]
    assert short["230404_9"].startswith(f"{frames} frames, {down} after downsampling; at "
                                        "least 3")
    assert ">= 30 native frames" in short["230404_9"]
    assert too_short(frames, 10) == short["230404_9"]


def test_when_no_session_is_long_enough_the_parameter_is_refused():
    p = load_params()
    with pytest.raises(CalimParameterError) as info:
        check_against_sessions(p, {"230404_9": 12, "230404_2": 12, "230404_5": 25})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("parameter downsample.time = 10: session 230404_2 has 12 frames")
    assert message.endswith("no session is long enough")


def test_a_session_too_short_for_any_downsample_is_refused():
    p = load_params(None, [("downsample.time", "1")])
    with pytest.raises(CalimParameterError, match=r"has 2 frames, 2 after downsampling.*"
                                                  r"it cannot be processed"):
        check_against_sessions(p, {"230404_9": 2})


def test_trim_start_must_leave_a_frame():
    p = load_params(None, [("trim_start", "150")])
    check_against_sessions(p, {"230404_5": 1510})  # 151 downsampled frames
    with pytest.raises(CalimParameterError, match=r"^parameter trim_start = 150: must be < 150, "
                                                  r"the downsampled frames of session 230404_5"):
        check_against_sessions(p, {"230404_5": 1500})


def test_a_movie_link_needs_the_movie_and_the_nwb_file():
    with pytest.raises(CalimParameterError, match="outputs.nwb_movie = true: needs"):
        load_params(None, [("outputs.nwb_movie", "true"), ("outputs.movie", "none")])
    with pytest.raises(CalimParameterError, match="outputs.nwb_movie = true: needs"):
        load_params(None, [("outputs.nwb_movie", "true"), ("outputs.nwb", "false")])
    assert load_params(None, [("outputs.nwb_movie", "true")])["outputs"]["nwb_movie"]


def test_a_soma_size_range_must_be_in_order():
    with pytest.raises(CalimParameterError, match=r"^parameter detection.diameter_range = "
                                                  r"\[1.6, 0.5\]: must be \[smallest, largest\]"):
        load_params(None, [("detection.diameter_range", "[1.6, 0.5]")])
