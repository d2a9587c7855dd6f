# %% [markdown]
# # 04 · Experiment aggregate
#
# All sessions of the experiment side by side: `results_raw.csv`, `results_norm.csv`,
# the tidy `results_long.csv`, `heatmap.pdf` and `hist_cum.pdf` (SPEC §3). When several
# experiments are given, also the comparison across experiments (`OUT/comparison/`).

# %% tags=["parameters"]
experiment_dir: str = "../demo/DEMO"  # experiment folder (dd-mm-yy/<yymmdd>_<n>/ tree), read only
out_dir: str = "../out"  # output root; results go to out_dir/<experiment>/
sessions: list = []  # session ids to process (date_session or session name), empty for all
heatmap: dict = {"vmin": 0.0, "vmax": 0.5}  # see params/default.yaml
compare: list = []  # names of other experiments already aggregated in out_dir, to compare with

# %%
from calim_helpers import pipeline

experiment = pipeline.Experiment.open(experiment_dir, out_dir, sessions)
exp = pipeline.aggregate_experiment(experiment, heatmap=heatmap)
exp

# %% [markdown]
# ## Heatmap and average trace

# %%
pipeline.show_aggregate(exp, heatmap=heatmap)

# %% [markdown]
# ## Comparison across experiments

# %%
comparison = pipeline.compare_experiments(out_dir, [experiment.name, *compare]) if compare else None
comparison

# %%
# NBVAL_CHECK_OUTPUT
print(pipeline.summary_aggregate(exp))
