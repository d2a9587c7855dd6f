# %% [markdown]
# # 05 · Experiment aggregate
#
# All sessions of the experiment side by side: `results_raw.csv`, `results_norm.csv`,
# the tidy `results_long.csv`, `heatmap.pdf` and `hist_cum.pdf` (SPEC §3). When several
# experiments are given, also the comparison across experiments (`OUT/comparison/`).

# %% tags=["parameters"]
experiment_dir: str = "../demo/DEMO"  # experiment folder (dd-mm-yy/<yymmdd>_<n>/ tree), read only
out_dir: str = "../out"  # output root; results go to out_dir/<experiment>/
sessions: list = []  # session ids (date_session or session name) to process, empty for all; with one id the notebook shows the figures of that session
heatmap: dict = {'vmin': 0.0, 'vmax': 0.5}  # see params/default.yaml
statistics: dict = {'unit': 'session'}  # see params/default.yaml
compare: list = []  # names of other experiments already aggregated in out_dir, to compare with

# %%
from calim_helpers.workflow import steps, views

experiment = views.open_experiment(experiment_dir, out_dir, sessions)
exp = steps.aggregate_step(experiment, heatmap=heatmap)
exp

# %% [markdown]
# ## Heatmap and average trace (`heatmap.pdf`, `hist_cum.pdf`)

# %%
views.show_aggregate(exp, heatmap=heatmap)

# %% [markdown]
# ## Comparison across experiments

# %%
comparison = steps.compare_step(out_dir, [experiment.name, *compare], statistics=statistics) if compare else None
views.show_comparison(out_dir) if compare else "one experiment: nothing to compare"

# %%
# NBVAL_CHECK_OUTPUT
print(views.summary_aggregate(exp))
