# %% [markdown]
# # 01 · Load, motion-correct and downsample
#
# Opens every session's Micro-Manager stack lazily (dask), corrects motion (rigid or
# piecewise-rigid, sub-pixel; shifts saved to `shifts.csv` and plotted), optionally
# denoises, and block-mean downsamples it (SPEC §2 steps 1-2, §4). Stores the downsampled
# movie and the native maximum-intensity projection for the next notebook, and writes the
# corrected movie for Fiji (`outputs.movie`: `downsampled`, `native` or `none`).

# %% tags=["parameters"]
experiment_dir: str = "../demo/DEMO"  # experiment folder (dd-mm-yy/<yymmdd>_<n>/ tree), read only
out_dir: str = "../out"  # output root; results go to out_dir/<experiment>/
sessions: list = []  # session ids (date_session or session name) to process, empty for all; with one id the notebook shows the figures of that session
compute: dict = {'workers': 'auto', 'worker_memory': 'auto', 'scheduler': 'threads', 'parallel_sessions': 1, 'resume': True}  # see params/default.yaml
load: dict = {'chunk_time': 50, 'channel': None}  # see params/default.yaml
registration: dict = {'enabled': True, 'method': 'rigid', 'template_frames': 200, 'upsample_factor': 20, 'bin_px': 2, 'max_shift_px': 20.0, 'grid': [4, 4]}  # see params/default.yaml
denoise: dict = {'method': 'none', 'sigma_px': 1.0, 'sigma_frames': 1.0, 'size': 3}  # see params/default.yaml
downsample: dict = {'time': 10, 'y': 2, 'x': 2}  # see params/default.yaml
figures: dict = {'per_roi': True, 'per_roi_pdf': False, 'dpi': 100}  # see params/default.yaml
outputs: dict = {'nwb': True, 'movie': 'downsampled', 'nwb_movie': False}  # see params/default.yaml

# %%
from calim_helpers.workflow import runner, views

experiment = views.open_experiment(experiment_dir, out_dir, sessions)
experiment.table()

# %% [markdown]
# ## Load every session

# %% tags=["step"]
status = runner.run_step("load", experiment, compute=compute, load=load,
                         registration=registration, denoise=denoise, downsample=downsample,
                         figures=figures, outputs=outputs)
status

# %% [markdown]
# ## What was loaded
# Every session: its maximum projection after correction, and how far it moved. One
# session: its MIP and mean downsampled frame, the shifts per frame and the mean image
# before and after motion correction.

# %%
views.show_load(experiment)

# %%
# NBVAL_CHECK_OUTPUT
print(views.summary_load(experiment, status))
