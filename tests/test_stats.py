"""Tests for calim_helpers.stats: rank tests per feature, by session or by cell."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from calim_helpers import stats


def cells(experiment: str, session: str, values, *, date: str = "04-04-23",
          metric: str = "rate_per_min") -> pd.DataFrame:
    """Feature rows of one session: one row per cell, ``metric`` = ``values``."""
    values = np.asarray(values, dtype=float)
    return pd.DataFrame({"experiment": experiment, "date": date, "session": session,
                         "roi": np.arange(1, values.size + 1), metric: values})


def pseudo_replicated(seed: int = 0) -> dict[str, pd.DataFrame]:
    """Two conditions × 2 sessions × 50 cells; the sessions, not the conditions, differ.

    Session levels: A = (0, 2), B = (1, 3). Pooled over cells, B lies above A
    (mean 2 vs 1); over sessions, 2 vs 2 values interleave (0 < 1 < 2 < 3).
    """
    rng = np.random.default_rng(seed)
    out = {}
    for cond, levels in (("A", (0.0, 2.0)), ("B", (1.0, 3.0))):
        out[cond] = pd.concat([cells(cond, f"{cond}{k}", level + rng.normal(0, 0.3, 50))
                               for k, level in enumerate(levels, 1)], ignore_index=True)
    return out


def session_medians(table: pd.DataFrame, metric: str = "rate_per_min") -> np.ndarray:
    """Median per (date, session), computed here independently of the module."""
    keys = sorted(set(zip(table["date"], table["session"], strict=True)))
    return np.array([np.median(table.loc[(table["date"] == d) & (table["session"] == s),
                                         metric].dropna()) for d, s in keys])


# --------------------------------------------------------------- known answers


def test_clearly_different_groups_at_unit_cell():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 40), rng.normal(2, 1, 40)
    groups = {"low": cells("low", "s1", a), "high": cells("high", "s2", b)}
    res = stats.condition_tests(groups, metrics=["rate_per_min"], unit="cell")
    row = res.iloc[0]
    assert row["p_value"] < 0.01
    ref = sps.mannwhitneyu(a, b, alternative="two-sided")
    assert row["statistic"] == pytest.approx(ref.statistic)
    assert row["p_value"] == pytest.approx(ref.pvalue)
    assert (row["unit"], row["test"], row["n_low"], row["n_high"]) == ("cell", "mannwhitney",
                                                                       40, 40)
    assert row["note"] == ""


def test_pseudo_replication_cell_vs_session():
    groups = pseudo_replicated()
    by_cell = stats.condition_tests(groups, metrics=["rate_per_min"], unit="cell").iloc[0]
    by_session = stats.condition_tests(groups, metrics=["rate_per_min"]).iloc[0]
    assert by_cell["p_value"] < 1e-6  # 100 "independent" cells per condition
    assert by_session["unit"] == "session"  # the default
    assert by_session["p_value"] > 0.3  # 2 sessions per condition: no evidence
    med_a, med_b = session_medians(groups["A"]), session_medians(groups["B"])
    np.testing.assert_allclose(np.sort(med_a), [0, 2], atol=0.15)  # the construction
    ref = sps.mannwhitneyu(med_a, med_b, alternative="two-sided")
    assert by_session["statistic"] == pytest.approx(ref.statistic)
    assert by_session["p_value"] == pytest.approx(ref.pvalue)
    assert (by_session["n_A"], by_session["n_B"]) == (2, 2)
    assert (by_cell["n_A"], by_cell["n_B"]) == (100, 100)


def test_kruskal_on_session_medians_of_three_conditions():
    rng = np.random.default_rng(2)
    groups = {}
    for c, (cond, n_sess) in enumerate((("CTRL", 3), ("DNQX", 4), ("TTX", 3))):
        groups[cond] = pd.concat(
            [cells(cond, f"{cond}_{k}", c + rng.normal(0, 1, rng.integers(5, 30)))
             for k in range(n_sess)], ignore_index=True)
    groups["DNQX"].loc[0, "rate_per_min"] = np.nan  # dropped before the median
    row = stats.condition_tests(groups, metrics=["rate_per_min"]).iloc[0]
    ref = sps.kruskal(*(session_medians(g) for g in groups.values()))
    assert row["test"] == "kruskal"
    assert row["statistic"] == pytest.approx(ref.statistic)
    assert row["p_value"] == pytest.approx(ref.pvalue)
    assert row["groups"] == "CTRL vs DNQX vs TTX"
    assert [row["n_CTRL"], row["n_DNQX"], row["n_TTX"]] == [3, 4, 3]


def test_per_session_medians_and_counts():
    table = pd.concat([cells("A", "s1", [1.0, 5.0, 3.0]),
                       cells("A", "s1", [10.0, np.nan], date="05-04-23"),  # same name
                       cells("A", "s2", [2.0, 4.0])], ignore_index=True)
    out = stats.per_session(table, metrics=["rate_per_min"])
    assert list(zip(out["date"], out["session"], strict=True)) == [
        ("04-04-23", "s1"), ("05-04-23", "s1"), ("04-04-23", "s2")]
    np.testing.assert_array_equal(out["rate_per_min"], [3.0, 10.0, 3.0])
    np.testing.assert_array_equal(out["n_cells"], [3, 2, 2])


def test_same_session_name_on_two_dates_counts_twice():
    a = pd.concat([cells("A", "s1", [0.0, 0.1]), cells("A", "s1", [1.0, 1.1], date="05-04-23")])
    b = pd.concat([cells("B", "s1", [2.0, 2.1]), cells("B", "s2", [3.0, 3.1])])
    row = stats.condition_tests({"A": a, "B": b}, metrics=["rate_per_min"]).iloc[0]
    assert (row["n_A"], row["n_B"]) == (2, 2) and row["test"] == "mannwhitney"


# ------------------------------------------------------ not computable, sessions


def test_fewer_than_two_sessions_is_not_computable():
    groups = pseudo_replicated()
    groups["B"] = groups["B"][groups["B"]["session"] == "B1"]  # one session left
    res = stats.condition_tests(groups, metrics=["rate_per_min"])
    row = res.iloc[0]
    assert row["test"] == "none" and np.isnan(row["p_value"]) and np.isnan(row["statistic"])
    assert row["unit"] == "session"  # no silent switch to cells
    assert "B has 1 session" in row["note"] and "needs >= 2" in row["note"]
    assert (row["n_A"], row["n_B"]) == (2, 1)


def test_groups_that_are_sessions():
    rng = np.random.default_rng(3)
    a, b, c = (rng.normal(m, 1, 25) for m in (0.0, 0.5, 3.0))
    by_session = {"04-04-23_230404_5": cells("E", "230404_5", a),
                  "04-04-23_230404_9": cells("E", "230404_9", b),
                  "05-04-23_230405_2": cells("E", "230405_2", c, date="05-04-23")}
    res = stats.condition_tests(by_session, metrics=["rate_per_min"], unit="cell").iloc[0]
    assert res["p_value"] == pytest.approx(sps.kruskal(a, b, c).pvalue)
    assert res["unit"] == "cell" and res["n_04-04-23_230404_5"] == 25
    wrong = stats.condition_tests(by_session, metrics=["rate_per_min"]).iloc[0]
    assert wrong["test"] == "none" and "use unit='cell'" in wrong["note"]


def test_table_with_experiment_column_equals_mapping():
    groups = pseudo_replicated()
    pooled = pd.concat(list(groups.values()), ignore_index=True)
    for unit in ("cell", "session"):
        pd.testing.assert_frame_equal(
            stats.condition_tests(pooled, metrics=["rate_per_min"], unit=unit),
            stats.condition_tests(groups, metrics=["rate_per_min"], unit=unit))


def test_output_columns_and_inputs_unchanged():
    groups = pseudo_replicated()
    before = {k: v.copy() for k, v in groups.items()}
    res = stats.condition_tests(groups, metrics=["rate_per_min"])
    assert list(res.columns) == ["metric", "unit", "test", "statistic", "p_value", "groups",
                                 "note", "n_A", "n_B"]
    for k in groups:
        pd.testing.assert_frame_equal(groups[k], before[k])
    again = stats.condition_tests(groups, metrics=["rate_per_min"])
    pd.testing.assert_frame_equal(res, again)


# ---------------------------------------------- ported cell-level behaviour, errors


def features(n: int, experiment: str, *, rate: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_events = rng.poisson(rate * 2.5, n)
    return pd.DataFrame({
        "experiment": experiment, "date": "04-04-23", "session": "230404_5",
        "rate_per_min": n_events / 2.5,
        "mean_amplitude": np.where(n_events > 0, rng.gamma(2, 0.1, n), np.nan),
        "participation": rng.uniform(0, 1, n), "snr": rng.gamma(3, 2, n),
    })


def by_experiment(n: int = 3) -> dict[str, pd.DataFrame]:
    names = ["CTRL", "GLUT_DNQX", "TTX"][:n]
    return {name: features(10 + 3 * k, name, rate=1 + 2 * k, seed=k)
            for k, name in enumerate(names)}


def test_cell_unit_matches_scipy():
    two = by_experiment(2)
    two["CTRL"].loc[0, "rate_per_min"] = np.nan  # dropped
    res = stats.condition_tests(two, unit="cell")
    assert list(res["metric"]) == ["rate_per_min", "mean_amplitude", "participation"]
    for _, row in res.iterrows():
        a, b = (g[row["metric"]].dropna().to_numpy() for g in two.values())
        ref = sps.mannwhitneyu(a, b, alternative="two-sided")
        assert row["test"] == "mannwhitney"
        assert row["statistic"] == pytest.approx(ref.statistic)
        assert row["p_value"] == pytest.approx(ref.pvalue)
        assert (row["n_CTRL"], row["n_GLUT_DNQX"]) == (a.size, b.size)
    assert res.loc[0, "n_CTRL"] == 9
    three = by_experiment(3)
    res3 = stats.condition_tests(three, metrics=["rate_per_min", "snr"], unit="cell")
    for _, row in res3.iterrows():
        ref = sps.kruskal(*(g[row["metric"]].dropna() for g in three.values()))
        assert row["test"] == "kruskal"
        assert row["p_value"] == pytest.approx(ref.pvalue)
        assert row["statistic"] == pytest.approx(ref.statistic)
    k2 = stats.condition_tests(two, metrics=["snr"], test="kruskal", unit="cell")
    assert k2.loc[0, "p_value"] == pytest.approx(
        sps.kruskal(*(g["snr"] for g in two.values())).pvalue)


def test_cell_unit_edge_cases():
    one = stats.condition_tests(by_experiment(1), unit="cell")
    assert (one["test"] == "none").all() and one["p_value"].isna().all()
    assert one["note"].str.contains("fewer than 2 groups").all()
    empty = by_experiment(2)
    empty["GLUT_DNQX"]["participation"] = np.nan  # no value left -> not testable
    res = stats.condition_tests(empty, metrics=["participation"], unit="cell")
    assert res.loc[0, "test"] == "none" and res.loc[0, "n_GLUT_DNQX"] == 0


def test_errors():
    with pytest.raises(ValueError, match="compares 2 groups, got 3"):
        stats.condition_tests(by_experiment(3), test="mannwhitney", unit="cell")
    with pytest.raises(ValueError, match="test must be one of"):
        stats.condition_tests(by_experiment(2), test="ttest")
    with pytest.raises(ValueError, match="unit must be one of"):
        stats.condition_tests(by_experiment(2), unit="roi")
    with pytest.raises(ValueError, match="missing column"):
        stats.condition_tests(by_experiment(2), metrics=["nope"])
    with pytest.raises(ValueError, match="at least one group"):
        stats.condition_tests({})
    no_session = {k: v.drop(columns="session") for k, v in by_experiment(2).items()}
    with pytest.raises(ValueError, match="unit='session' needs the 'session' column"):
        stats.condition_tests(no_session)
    assert stats.condition_tests(no_session, unit="cell")["test"].eq("mannwhitney").all()
    with pytest.raises(ValueError, match="features must be a mapping"):
        stats.feature_groups([1, 2])
