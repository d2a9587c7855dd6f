# %% [markdown]
# # 02 · ROI propagation and traces
#
# Takes each session's Fiji ROIs (or, per `rois.source`, ROIs found by automatic
# detection, written as `ROIs_auto.zip` for Fiji and compared with the expert set),
# rasterizes each ROI as ImageJ does, carries it to the downsampled grid (the one
# notebook 01 made) as a coverage weight per pixel, and extracts the ROI traces (weighted means) and the
# background trace from a seeded random draw of pixels outside every ROI (SPEC §2 steps 3-4).

# %% tags=["parameters"]
experiment_dir: str = "../demo/DEMO"  # experiment folder (dd-mm-yy/<yymmdd>_<n>/ tree), read only
out_dir: str = "../out"  # output root; results go to out_dir/<experiment>/
sessions: list = []  # session ids to process (date_session or session name), empty for all
compute: dict = {"scheduler": "threads", "parallel_sessions": 1}  # see params/default.yaml
rois: dict = {"source": "auto_if_missing"}  # see params/default.yaml
detection: dict = {"diameter_um": 12.0, "iou_threshold": 0.5}  # see params/default.yaml
background: dict = {"fraction": 0.1, "seed": 0}  # see params/default.yaml
figures: dict = {"per_roi": True, "dpi": 100}  # see params/default.yaml

# %%
from calim_helpers import pipeline

experiment = pipeline.Experiment.open(experiment_dir, out_dir, sessions)

# %% [markdown]
# ## Traces of every session

# %%
status = pipeline.run_step("rois", experiment, compute=compute, background=background,
                           figures=figures, rois=rois, detection=detection)
status

# %% [markdown]
# ## First session: ROIs over the MIP, raw traces and background

# %%
pipeline.show_rois(experiment)

# %%
# NBVAL_CHECK_OUTPUT
print(pipeline.summary_rois(experiment, status))
