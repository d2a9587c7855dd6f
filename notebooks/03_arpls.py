# %% [markdown]
# # 03 · arPLS drift correction and normalization
#
# For each ROI: `signal = raw − background`, `baseline = arPLS(signal)` (Baek et al. 2015),
# `corrected = signal − baseline`, then the chosen normalization (SPEC §2 steps 5-7).
# Fits that stopped at `max_iter` are listed per ROI. To try another λ on one ROI, use
# `00_explore`.

# %% tags=["parameters"]
experiment_dir: str = "../demo/DEMO"  # experiment folder (dd-mm-yy/<yymmdd>_<n>/ tree), read only
out_dir: str = "../out"  # output root; results go to out_dir/<experiment>/
sessions: list = []  # session ids (date_session or session name) to process, empty for all; with one id the notebook shows the figures of that session
compute: dict = {'workers': 'auto', 'worker_memory': 'auto', 'scheduler': 'threads', 'parallel_sessions': 1, 'resume': True}  # see params/default.yaml
arpls: dict = {'lam': 10.0, 'cutoff_s': None, 'tol': 1e-05, 'max_iter': 100}  # see params/default.yaml
normalize: str = 'dff'  # see params/default.yaml
trim_start: int = 0  # see params/default.yaml
heatmap: dict = {'vmin': 0.0, 'vmax': 0.5}  # see params/default.yaml
figures: dict = {'per_roi': True, 'per_roi_pdf': False, 'dpi': 100}  # see params/default.yaml

# %%
from calim_helpers.workflow import runner, views

experiment = views.open_experiment(experiment_dir, out_dir, sessions)

# %% [markdown]
# ## Correct every session

# %% tags=["step"]
status = runner.run_step("arpls", experiment, compute=compute, arpls=arpls,
                         normalize=normalize, trim_start=trim_start, figures=figures)
status

# %% [markdown]
# ## Fits that stopped at `max_iter` (the last iterate is kept)

# %%
views.convergence_table(experiment)

# %% [markdown]
# ## The corrected signal
# Every session: the normalized signal of all ROIs (rows) over time, grouped by session.
# One session: raw, background, ROI − background and its baseline, and the normalized
# signal, for its first ROIs.

# %%
views.show_arpls(experiment, heatmap=heatmap)

# %%
# NBVAL_CHECK_OUTPUT
print(views.summary_arpls(experiment, status))
