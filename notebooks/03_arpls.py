# %% [markdown]
# # 03 · arPLS drift correction and normalization
#
# For each ROI: `signal = raw − background`, `baseline = arPLS(signal)` (Baek et al. 2015),
# `corrected = signal − baseline`, then the chosen normalization (SPEC §2 steps 5-7).
# Fits that did not converge are listed per ROI.

# %% tags=["parameters"]
experiment_dir: str = "../demo/DEMO"  # experiment folder (dd-mm-yy/<yymmdd>_<n>/ tree), read only
out_dir: str = "../out"  # output root; results go to out_dir/<experiment>/
sessions: list = []  # session ids to process (date_session or session name), empty for all
compute: dict = {"scheduler": "threads", "parallel_sessions": 1}  # see params/default.yaml
arpls: dict = {"lam": 10.0, "cutoff_s": None, "tol": 1e-05, "max_iter": 100}  # see params/default.yaml
normalize: str = "dff"  # see params/default.yaml
trim_start: int = 0  # see params/default.yaml
figures: dict = {"per_roi": True, "dpi": 100}  # see params/default.yaml

# %%
from calim_helpers import pipeline

experiment = pipeline.Experiment.open(experiment_dir, out_dir, sessions)

# %% [markdown]
# ## Correct every session

# %%
status = pipeline.run_step("arpls", experiment, compute=compute, arpls=arpls,
                           normalize=normalize, trim_start=trim_start, figures=figures)
status

# %% [markdown]
# ## Fits that did not converge (best iterate kept)

# %%
pipeline.convergence_table(experiment)

# %% [markdown]
# ## First session, first ROI: raw, background, baseline, corrected and normalized

# %%
pipeline.show_arpls(experiment)

# %%
# NBVAL_CHECK_OUTPUT
print(pipeline.summary_arpls(experiment, status))
