"""Rank tests of per-ROI features between groups (conditions, or sessions).

The feature table (one row per ROI, see :mod:`calim_helpers.events`) holds
``experiment``, ``date`` and ``session`` columns beside the features. Cells of one
session share a preparation, a day and a field of view: they are not independent
samples of their condition. :func:`condition_tests` therefore compares conditions
with one value per session by default (``unit="session"``: the median of each
feature over the session's ROIs); ``unit="cell"`` treats every ROI as a sample,
which is only right when the groups themselves are sessions (sessions of one
experiment side by side).

No figure is drawn here: :func:`calim_helpers.plots.condition_summary_figure`
draws the result.

Examples
--------
Two conditions, each with two sessions of three cells:

>>> import pandas as pd
>>> table = pd.DataFrame({
...     "experiment": ["CTRL"] * 6 + ["TTX"] * 6,
...     "date": "04-04-23",
...     "session": ["s1"] * 3 + ["s2"] * 3 + ["s3"] * 3 + ["s4"] * 3,
...     "rate_per_min": [1.0, 2.0, 3.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 6.0, 7.0, 8.0]})
>>> per_session(table, metrics=["rate_per_min"])[["session", "n_cells", "rate_per_min"]]
  session  n_cells  rate_per_min
0      s1        3           2.0
1      s2        3           3.0
2      s3        3           6.0
3      s4        3           7.0
>>> res = condition_tests(table, metrics=["rate_per_min"])
>>> res[["unit", "test", "n_CTRL", "n_TTX"]].to_dict("records")
[{'unit': 'session', 'test': 'mannwhitney', 'n_CTRL': 2, 'n_TTX': 2}]
>>> round(float(res.loc[0, "p_value"]), 3)  # 2 vs 2 sessions: p cannot go below 1/3
0.333
>>> float(condition_tests(table, metrics=["rate_per_min"], unit="cell").loc[0, "p_value"]) < 0.01
True
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["TESTS", "UNITS", "condition_tests", "feature_groups", "per_session"]

#: Accepted ``test`` choices of :func:`condition_tests`.
TESTS = ("auto", "mannwhitney", "kruskal")

#: Accepted ``unit`` choices of :func:`condition_tests` (the statistical sample).
UNITS = ("session", "cell")

#: Columns that identify a session in a feature table (``date`` when present).
_SESSION_KEYS = ("date", "session")

_DEFAULT_METRICS = ("rate_per_min", "mean_amplitude", "participation")


def _check_columns(table: object, columns: Sequence[str], name: str, /) -> None:
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s) {missing}; has {list(table.columns)}")


def feature_groups(
    features: Mapping[str, pd.DataFrame] | pd.DataFrame,
    /,
    *,
    column: str = "experiment",
) -> dict[str, pd.DataFrame]:
    """Split feature tables into named groups, in display order.

    Parameters
    ----------
    features : mapping of str to pandas.DataFrame, or pandas.DataFrame
        Group name → its feature rows (kept in the mapping's order); or one table
        split by ``column`` (groups in order of first appearance).
    column : str, optional
        Column naming the group of each row of a single table. Default is
        ``"experiment"``.

    Returns
    -------
    dict of str to pandas.DataFrame
        The tables themselves (not copies): callers must not modify them.

    Raises
    ------
    ValueError
        If ``features`` is neither a mapping of DataFrames nor a DataFrame with
        ``column``.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"experiment": ["b", "a", "b"], "snr": [1.0, 2.0, 3.0]})
    >>> {k: len(v) for k, v in feature_groups(t).items()}
    {'b': 2, 'a': 1}
    """
    if isinstance(features, pd.DataFrame):
        _check_columns(features, [column], "features")
        return {str(k): g for k, g in features.groupby(column, sort=False)}
    if isinstance(features, Mapping):
        out = {}
        for name, table in features.items():
            _check_columns(table, [], f"features[{name!r}]")
            out[str(name)] = table
        return out
    raise ValueError("features must be a mapping of group name to DataFrame, or a "
                     f"DataFrame, got {type(features).__name__}")


def per_session(features: pd.DataFrame, /, *, metrics: Sequence[str]) -> pd.DataFrame:
    """Median of each feature over the ROIs of each session.

    A session is a distinct ``(date, session)`` pair (``session`` alone when the
    table has no ``date`` column). Missing values are ignored; a session without a
    value for a feature gets NaN for it.

    Parameters
    ----------
    features : pandas.DataFrame
        Feature table, one row per ROI, with a ``session`` column (and ``date``).
    metrics : sequence of str
        Feature columns to summarize.

    Returns
    -------
    pandas.DataFrame
        One row per session in order of first appearance: the key columns,
        ``n_cells`` (rows of the session) and one column per metric (the median).

    Raises
    ------
    ValueError
        If the ``session`` column or a metric column is missing.
    """
    metrics = list(metrics)
    _check_columns(features, ["session", *metrics], "features")
    keys = [c for c in _SESSION_KEYS if c in features.columns]
    values = features[keys + metrics].copy()
    values[metrics] = values[metrics].astype(float)
    grouped = values.groupby(keys, sort=False, dropna=False)
    out = grouped[metrics].median() if metrics else grouped.size().to_frame().iloc[:, :0]
    out.insert(0, "n_cells", grouped.size())
    return out.reset_index()


def _samples(table: pd.DataFrame, metric: str, unit: str, /) -> np.ndarray:
    """Finite sample values of ``metric`` in one group: cells, or session medians."""
    if unit == "cell":
        v = table[metric].to_numpy(dtype=float, copy=True)
    else:
        v = per_session(table, metrics=[metric])[metric].to_numpy(dtype=float, copy=True)
    return v[np.isfinite(v)]


def _plural(n: int, noun: str, /) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def condition_tests(
    features_by_group: Mapping[str, pd.DataFrame] | pd.DataFrame,
    /,
    *,
    metrics: Sequence[str] = _DEFAULT_METRICS,
    test: str = "auto",
    unit: str = "session",
) -> pd.DataFrame:
    """Rank test per feature between groups (conditions, or sessions).

    Two groups are compared with the two-sided Mann–Whitney U test
    (:func:`scipy.stats.mannwhitneyu`), more with the Kruskal–Wallis H test
    (:func:`scipy.stats.kruskal`). Missing values are dropped per feature.
    p-values are not corrected for multiple comparisons.

    What is a sample is set by ``unit``:

    - ``"session"`` (default) — the groups are conditions, each holding
      sessions; each session contributes one value per feature, the median over
      its ROIs (:func:`per_session`), so that cells of one session are not
      counted as independent samples. When a group has fewer than 2 sessions
      with a value, the test is not computable: ``test`` is ``"none"``, the
      p-value NaN and ``note`` says which group is short. It never falls back to
      cells.
    - ``"cell"`` — every ROI is a sample. This is the only meaningful choice
      when the groups *are* sessions (one experiment's sessions side by side,
      e.g. ``{"04-04-23_230404_5": rows, ...}``). Used for conditions it
      counts cells of one session as independent (pseudo-replication) and gives
      p-values far too small. Groups with no value left are left out of the test;
      fewer than 2 groups give ``"none"``.

    Parameters
    ----------
    features_by_group : mapping of str to pandas.DataFrame, or pandas.DataFrame
        Group name → its feature table (one row per ROI), in display order; or
        one feature table with an ``experiment`` column (groups in order of
        appearance). At ``unit="session"`` each table needs a ``session`` column
        (and ``date``, when session names repeat across dates).
    metrics : sequence of str, optional
        Feature columns to test. Default is ``("rate_per_min", "mean_amplitude",
        "participation")``.
    test : {"auto", "mannwhitney", "kruskal"}, optional
        ``"auto"`` picks Mann–Whitney for two groups and Kruskal–Wallis for more;
        ``"kruskal"`` also applies to two. Default is ``"auto"``.
    unit : {"session", "cell"}, optional
        The statistical sample, see above. Default is ``"session"``.

    Returns
    -------
    pandas.DataFrame
        One row per metric with columns ``metric``; ``unit``; ``test`` (``"mannwhitney"``,
        ``"kruskal"`` or ``"none"``, a word CSV readers keep as text); ``statistic`` (U of
        the first group tested, or H); ``p_value``; ``groups`` (the groups tested, ``" vs
        "``-joined); ``note`` (why the test is ``"none"``, else ``""``); and ``n_<group>``
        per group: the number of samples with a value, i.e. sessions at ``unit="session"``,
        cells at ``unit="cell"``.

    Raises
    ------
    ValueError
        If ``test`` or ``unit`` is unknown, ``"mannwhitney"`` is asked for more
        than two groups, there is no group, or a metric (or, at
        ``unit="session"``, the ``session``) column is missing.

    See Also
    --------
    per_session : the session medians tested at ``unit="session"``.
    calim_helpers.plots.condition_summary_figure : draws this table.
    """
    from scipy import stats  # here: scipy.stats takes 0.35 s to import

    if test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}, got {test!r}")
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    groups = feature_groups(features_by_group)
    if not groups:
        raise ValueError("features_by_group must hold at least one group, got none")
    metrics = list(metrics)
    needed = [*metrics, "session"] if unit == "session" else metrics
    for name, table in groups.items():
        try:
            _check_columns(table, needed, f"features_by_group[{name!r}]")
        except ValueError as err:
            if unit == "session" and "session" not in table.columns:
                raise ValueError(f"{err}; unit='session' needs the 'session' column "
                                 "(or pass unit='cell')") from None
            raise
    rows = []
    for metric in metrics:
        samples = {name: _samples(table, metric, unit) for name, table in groups.items()}
        if unit == "session":
            short = {name: v.size for name, v in samples.items() if v.size < 2}
            tested = {} if short else samples
            note = ""
            if short:
                what = ", ".join(f"{name} has {_plural(k, 'session')}"
                                 for name, k in short.items())
                note = (f"not computable at unit 'session': {what} with a value "
                        "(needs >= 2 per group)")
                if all(v.size <= 1 for v in samples.values()):
                    note += "; when the groups are sessions, use unit='cell'"
            elif len(tested) < 2:
                note = "not computable: fewer than 2 groups"
        else:
            tested = {name: v for name, v in samples.items() if v.size}
            note = "" if len(tested) >= 2 else "not computable: fewer than 2 groups with values"
        kind = "none" if len(tested) < 2 else (
            "mannwhitney" if test == "mannwhitney" or (test == "auto" and len(tested) == 2)
            else "kruskal")
        if kind == "mannwhitney" and len(tested) > 2:
            raise ValueError(f"test='mannwhitney' compares 2 groups, got {len(tested)} "
                             f"for {metric!r}; use 'kruskal' or 'auto'")
        statistic = p_value = np.nan
        if kind != "none":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # e.g. all values tied
                if kind == "mannwhitney":
                    res = stats.mannwhitneyu(*tested.values(), alternative="two-sided")
                else:
                    res = stats.kruskal(*tested.values())
            statistic, p_value = float(res.statistic), float(res.pvalue)
            if not np.isfinite(p_value):
                note = "not computable: all values tied"
        row = {"metric": metric, "unit": unit, "test": kind, "statistic": statistic,
               "p_value": p_value, "groups": " vs ".join(tested), "note": note}
        row.update({f"n_{name}": int(v.size) for name, v in samples.items()})
        rows.append(row)
    return pd.DataFrame(rows)
