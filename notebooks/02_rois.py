# %% [markdown]
# # 02 · ROIs and traces
#
# Takes each session's Fiji ROIs (or, per `rois.source`, ROIs found by automatic
# detection, written as `ROIs_auto.zip` for Fiji and compared with the expert set),
# rasterizes each ROI as ImageJ does, carries it to the downsampled grid as a coverage
# weight per pixel, and extracts the ROI traces (weighted means) and the background trace
# from a seeded random draw of pixels outside every ROI (SPEC §2 steps 3-4). With
# `neuropil.method` `annulus` or `fitted` it also extracts, in the same pass, the mean of
# a ring around each ROI that leaves out every ROI, for a neuropil correction beyond the
# lab's method (off by default).

# %% tags=["parameters"]
experiment_dir: str = "../demo/DEMO"  # experiment folder (dd-mm-yy/<yymmdd>_<n>/ tree), read only
out_dir: str = "../out"  # output root; results go to out_dir/<experiment>/
sessions: list = []  # session ids (date_session or session name) to process, empty for all; with one id the notebook shows the figures of that session
compute: dict = {'workers': 'auto', 'worker_memory': 'auto', 'scheduler': 'threads', 'parallel_sessions': 1, 'resume': True}  # see params/default.yaml
rois: dict = {'source': 'auto_if_missing'}  # see params/default.yaml
detection: dict = {'method': 'morphology', 'diameter_um': 12.0, 'diameter_range': [0.5, 1.6], 'iou_threshold': 0.5}  # see params/default.yaml
background: dict = {'fraction': 0.1, 'seed': 0}  # see params/default.yaml
neuropil: dict = {'method': 'none', 'coefficient': 0.7, 'inner_um': 2.0, 'width_um': 10.0, 'min_pixels': 50, 'quiet_fraction': 0.5, 'fit_degree': 3}  # see params/default.yaml
figures: dict = {'per_roi': True, 'per_roi_pdf': False, 'dpi': 100}  # see params/default.yaml

# %%
from calim_helpers.workflow import runner, views

experiment = views.open_experiment(experiment_dir, out_dir, sessions)

# %% [markdown]
# ## Traces of every session

# %% tags=["step"]
status = runner.run_step("rois", experiment, compute=compute, rois=rois, detection=detection,
                         background=background, neuropil=neuropil, figures=figures)
status

# %% [markdown]
# ## The ROIs
# Every session: its ROIs over its MIP. One session: the numbered ROI map and the raw
# traces with the background.

# %%
views.show_rois(experiment)

# %%
# NBVAL_CHECK_OUTPUT
print(views.summary_rois(experiment, status))
