# %% [markdown]
# # 00 · Explore one session
#
# Opens one session's stored results (after `calim run` or notebooks 01-04), shows its
# ROIs, re-fits one ROI's baseline with a λ or cut-off of your choice next to the stored
# fit, and re-detects its events with other thresholds. Nothing here writes files.
# Change the values below and re-run the notebook (or run it with papermill
# `-p roi 3 -p refit_lam 1000`).

# %% tags=["parameters"]
experiment_dir: str = "../demo/DEMO"  # experiment folder the run read
out_dir: str = "../out"  # output root of the run
session: str = "230404_5"  # session id (date_session) or name
roi: int = 1  # ROI number (from 1, in the order of the session's ROI zip)
refit_lam: float = 1000.0  # arPLS smoothness λ for the re-fit (larger: a stiffer baseline)
refit_cutoff_s: float = 0.0  # or a cut-off period in seconds (0: use refit_lam)
event_threshold: float = 2.5  # events: peak height above the resting level, noise σ
event_prominence: float = 2.5  # events: how far a peak stands out from its surroundings, noise σ

# %%
from calim_helpers.workflow import views

results = views.open_session_results(out_dir, experiment_dir, session)
results.result

# %% [markdown]
# ## The session: ROIs over the maximum projection, and its QC page

# %%
views.show_session(results)

# %% [markdown]
# ## Re-fit one ROI's baseline
# `views.refit_roi` calls `calim_helpers.correction.correct_traces` on the ROI's stored
# traces with the new λ (or cut-off) and the run's other settings.

# %%
refit = views.refit_roi(results, roi, lam=refit_lam, cutoff_s=refit_cutoff_s or None)
views.show_refit(results, refit)

# %% [markdown]
# ## Events with other thresholds
# `views.redetect_events` calls `calim_helpers.events.detect_events_dataset`; keywords not
# given keep the run's `events` settings.

# %%
events = views.redetect_events(results, roi, threshold=event_threshold,
                               prominence=event_prominence)
views.show_events(results, roi, events)

# %%
events

# %%
# NBVAL_CHECK_OUTPUT
print(f"{results.title} ROI {roi}: stored lam {results.result.attrs['lam']:g}, "
      f"re-fit lam {refit.attrs['lam']:g}, {len(events)} events at threshold {event_threshold:g}")
