# %% [markdown]
# # 05 · Events, synchrony and quality control
#
# On the normalized traces of every session: events (onset, peak, amplitude, duration),
# event rates, power spectra, synchronous network events (against a shuffle threshold),
# correlation matrices and clusters of co-active ROIs, a feature table per ROI, and a
# one-page QC figure per session (SPEC §4). Runs after `03_arpls`, before `04_aggregate`.

# %% tags=["parameters"]
experiment_dir: str = "../demo/DEMO"  # experiment folder (dd-mm-yy/<yymmdd>_<n>/ tree), read only
out_dir: str = "../out"  # output root; results go to out_dir/<experiment>/
sessions: list = []  # session ids to process (date_session or session name), empty for all
compute: dict = {"scheduler": "threads", "parallel_sessions": 1}  # see params/default.yaml
events: dict = {"threshold": 3.0, "prominence": 3.0, "min_duration_s": 0.0, "merge_gap_s": 0.0, "min_amplitude": 0.01}  # see params/default.yaml
synchrony: dict = {"bin_frames": 1, "n_shuffles": 1000, "alpha": 0.01, "cluster_threshold": 0.5}  # see params/default.yaml
qc: dict = {"snr_threshold": 3.0}  # see params/default.yaml
heatmap: dict = {"vmin": 0.0, "vmax": 0.5}  # see params/default.yaml
figures: dict = {"per_roi": True, "dpi": 100}  # see params/default.yaml

# %%
from calim_helpers import pipeline

experiment = pipeline.Experiment.open(experiment_dir, out_dir, sessions)

# %% [markdown]
# ## Analyse every session

# %%
status = pipeline.run_step("analysis", experiment, compute=compute, events=events,
                           synchrony=synchrony, qc=qc, heatmap=heatmap, figures=figures)
status

# %% [markdown]
# ## Feature table (one row per ROI; `features.csv`)

# %%
tables = pipeline.collect_analysis(experiment)
tables["features"]

# %% [markdown]
# ## First session: event raster with network events

# %%
pipeline.show_analysis(experiment)

# %%
# NBVAL_CHECK_OUTPUT
print(pipeline.summary_analysis(experiment, status))
