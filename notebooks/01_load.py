# %% [markdown]
# # 01 · Load and downsample
#
# Opens every session's Micro-Manager stack lazily (dask), corrects motion (rigid or
# piecewise-rigid, sub-pixel; shifts saved to `shifts.csv` and plotted), optionally
# denoises, block-mean downsamples it (SPEC §2 steps 1-2, §4) and stores the downsampled
# movie and the native maximum-intensity projection for the next notebook. Also writes `run_record.json` (parameters, package
# versions, input checksums).

# %% tags=["parameters"]
experiment_dir: str = "../demo/DEMO"  # experiment folder (dd-mm-yy/<yymmdd>_<n>/ tree), read only
out_dir: str = "../out"  # output root; results go to out_dir/<experiment>/
sessions: list = []  # session ids to process (date_session or session name), empty for all
compute: dict = {"scheduler": "threads", "parallel_sessions": 1}  # see params/default.yaml
load: dict = {"chunk_time": 100}  # see params/default.yaml
registration: dict = {"enabled": True, "method": "rigid", "template_frames": 200, "upsample_factor": 20, "max_shift_px": 20.0, "grid": [4, 4]}  # see params/default.yaml
denoise: dict = {"method": "none", "sigma_px": 1.0, "sigma_frames": 1.0, "size": 3}  # see params/default.yaml
downsample: dict = {"time": 10, "y": 2, "x": 2}  # see params/default.yaml
figures: dict = {"per_roi": True, "dpi": 100}  # see params/default.yaml

# %%
from calim_helpers import pipeline

experiment = pipeline.Experiment.open(experiment_dir, out_dir, sessions)
experiment.table()

# %% [markdown]
# ## Downsample every session

# %%
status = pipeline.run_step("load", experiment, compute=compute, load=load,
                           registration=registration, denoise=denoise, downsample=downsample,
                           figures=figures)
status

# %% [markdown]
# ## First session: maximum-intensity projection and mean of the downsampled movie,
# ## and the motion correction

# %%
pipeline.show_load(experiment)

# %%
pipeline.show_registration(experiment)

# %%
# NBVAL_CHECK_OUTPUT
print(pipeline.summary_load(experiment, status))
