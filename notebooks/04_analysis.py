# %% [markdown]
# # 04 · Events, synchrony and quality control
#
# On the normalized traces of every session: events (onset, peak, amplitude, duration),
# event rates, power spectra, synchronous network events (against a shuffle threshold),
# correlation matrices and clusters of co-active ROIs, a feature table per ROI, and a
# one-page QC figure per session (SPEC §4). With `outputs.nwb`, also one NWB file per
# session (`<session>.nwb`, for DANDI).

# %% tags=["parameters"]
experiment_dir: str = "../demo/DEMO"  # experiment folder (dd-mm-yy/<yymmdd>_<n>/ tree), read only
out_dir: str = "../out"  # output root; results go to out_dir/<experiment>/
sessions: list = []  # session ids (date_session or session name) to process, empty for all; with one id the notebook shows the figures of that session
compute: dict = {'workers': 'auto', 'worker_memory': 'auto', 'scheduler': 'threads', 'parallel_sessions': 1, 'resume': True}  # see params/default.yaml
events: dict = {'threshold': 3.0, 'prominence': 3.0, 'min_duration_s': 0.0, 'merge_gap_s': 0.0, 'min_amplitude': 0.01}  # see params/default.yaml
synchrony: dict = {'bin_frames': 1, 'n_shuffles': 1000, 'alpha': 0.01, 'cluster_threshold': 0.5}  # see params/default.yaml
qc: dict = {'snr_threshold': 3.0}  # see params/default.yaml
heatmap: dict = {'vmin': 0.0, 'vmax': 0.5}  # see params/default.yaml
figures: dict = {'per_roi': True, 'per_roi_pdf': False, 'dpi': 100}  # see params/default.yaml
outputs: dict = {'nwb': True, 'movie': 'downsampled', 'nwb_movie': False}  # see params/default.yaml
nwb: dict = {'subject_id': None, 'species': None, 'sex': None, 'age': None, 'subject_description': None, 'lab': None, 'institution': None, 'experimenter': None, 'indicator': None, 'location': None, 'excitation_lambda_nm': None, 'emission_lambda_nm': None, 'experiment_description': None, 'keywords': None, 'related_publications': None, 'pharmacology': None, 'protocol': None, 'surgery': None, 'virus': None, 'strain': None, 'genotype': None, 'weight': None, 'device': None, 'device_description': None, 'device_model': None, 'device_manufacturer': None}  # see params/default.yaml

# %%
from calim_helpers.workflow import runner, steps, views

experiment = views.open_experiment(experiment_dir, out_dir, sessions)

# %% [markdown]
# ## Analyse every session

# %% tags=["step"]
status = runner.run_step("analysis", experiment, compute=compute, events=events,
                         synchrony=synchrony, qc=qc, heatmap=heatmap, figures=figures,
                         outputs=outputs, nwb=nwb)
status

# %% [markdown]
# ## Feature table (one row per ROI; `features.csv`)

# %%
tables = steps.collect_analysis_step(experiment)
tables["features"]

# %% [markdown]
# ## Activity
# Every session: the per-ROI features of the sessions side by side, and the event raster
# of the first. One session: its raster with network events, QC page, correlation matrix,
# clustered traces and feature summary.

# %%
views.show_analysis(experiment)

# %%
# NBVAL_CHECK_OUTPUT
print(views.summary_analysis(experiment, status))
