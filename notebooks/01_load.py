# %% [markdown]
# # 01 · Load and downsample
#
# Opens every session's Micro-Manager stack lazily (dask), block-mean downsamples it
# (SPEC §2 steps 1-2) and stores the downsampled movie and the native maximum-intensity
# projection for the next notebook. Also writes `run_record.json` (parameters, package
# versions, input checksums).

# %% tags=["parameters"]
experiment_dir: str = "../demo/DEMO"  # experiment folder (dd-mm-yy/<yymmdd>_<n>/ tree), read only
out_dir: str = "../out"  # output root; results go to out_dir/<experiment>/
sessions: list = []  # session ids to process (date_session or session name), empty for all
load: dict = {"chunk_time": 100}  # see params/default.yaml
downsample: dict = {"time": 10, "y": 2, "x": 2}  # see params/default.yaml

# %%
from calim_helpers import pipeline

experiment = pipeline.Experiment.open(experiment_dir, out_dir, sessions)
record = pipeline.run_record(experiment, {"load": load, "downsample": downsample})
experiment.table()

# %% [markdown]
# ## Downsample every session

# %%
status = pipeline.run_step("load", experiment, load=load, downsample=downsample)
status

# %% [markdown]
# ## First session: maximum-intensity projection and mean of the downsampled movie

# %%
pipeline.show_load(experiment)

# %%
# NBVAL_CHECK_OUTPUT
print(pipeline.summary_load(experiment, status))
