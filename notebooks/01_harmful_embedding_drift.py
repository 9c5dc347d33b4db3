# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (vaccine)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Harmful embedding drift
#
# **Paper claim tested.** Fine-tuning on data with a fraction p of harmful samples breaks alignment, and the break
# comes with *harmful embedding drift*: as p grows, the harmful score, the alignment loss and the drift of the hidden
# embeddings of the alignment data all grow, for the SFT-aligned model as for the Non-Aligned one.
#
# **Paper reference.** Section 3, Figure 2 (HS, fine-tune accuracy, alignment loss and drift vs harmful ratio;
# Llama2-7B, SST2).
#
# **How.** Non-Aligned (no alignment) and SFT-aligned models are fine-tuned on `finetune.n` user samples at each
# harmful ratio in `sweeps.ps` (registry entry `fig2`); each model is evaluated (HS on unseen harmful prompts, FA on
# the task) and its drift is measured against its starting point on `drift.n_samples` fixed alignment samples
# (attention outputs of every layer; `drift` = RMS per token, `drift_sum_sq` = the reference code's summed squared L2).
#
# **Runtime.** Measured per profile in `results/<profile>/timings.json` (the README lists the default run).
# Stages are cached in `runs/<profile>/`, so a rerun, or a later notebook that needs the same models, takes seconds.
#
# **Which copy is this?** `notebooks/*.ipynb` holds the outputs of the last default-profile run (`make reproduce`),
# generation previews cleared; `notebooks/*.py` is the same notebook as a jupytext percent script (for diffs).
# `make test` executes these notebooks on the smoke profile (`VACCINE_PROFILE=smoke`).

# %% tags=["parameters"]
import os

profile = os.environ.get("VACCINE_PROFILE", "default")  # smoke | default | full | paper, or a profile YAML path
seed = None  # None: the profile's seeds; an int runs that one seed
run_dir = None  # None: runs/<profile>, the stage cache every notebook shares
figures_dir = None  # None: figures/ for the committed default profile, results/<profile>/figures otherwise
tables_dir = None  # None: <figures_dir>/tables
overrides = {}  # profile changes, e.g. {"align": {"lr": 1e-3}} or {"sweeps.ps": [0.0, 0.2]}

# %%
# NBVAL_IGNORE_OUTPUT
# Validate the parameters (an unknown name or an out-of-range value stops here, naming the allowed range).
import pandas as pd

from vaccine_lib import plotting, registry, tables

P, RUN, FIG, TAB = tables.notebook_setup(globals())  # quiet warnings, pandas display, validated profile

# %% [markdown]
# ## Fine-tune at every harmful ratio

# %%
# NBVAL_IGNORE_OUTPUT
print(registry.describe_plan(P, RUN, "fig2"))  # the design: grid per method, stage keys, cached or not

# %%
# NBVAL_IGNORE_OUTPUT
df = tables.run(P, RUN, "fig2")

# %%
# NBVAL_CHECK_OUTPUT
cols = ["defense", "p", "n", "seed", "hs", "refusal", "label_only", "fa", "align_loss", "drift", "drift_sum_sq",
        "stage_key", "eval_key"]
plotting.save_table(df[cols], "fig2_harmful_drift", TAB)
print(tables.check(df, P, "fig2", finite=["align_loss", "drift"]))

# %%
# NBVAL_IGNORE_OUTPUT
df[["defense", "p", "seed", "hs", "refusal", "fa", "align_loss", "drift"]].round(2)

# %% [markdown]
# ## Figure 2: HS, FA, alignment loss and drift vs p

# %%
fig = plotting.lines(df, "p", ["hs", "fa", "align_loss", "drift"], hue="defense")
plotting.save_fig(fig, "fig2_harmful_drift", FIG, data=df);

# %% [markdown]
# ## Does each quantity grow with p?
# Spearman rank correlation with p per method (+1: grows monotonically; NaN: constant).

# %%
# NBVAL_IGNORE_OUTPUT
tr = tables.spearman_by_group(df, "p", ["hs", "align_loss", "drift"])
plotting.save_table(tr, "fig2_trend", TAB)
tr.round(2)

# %% [markdown]
# ## Result: the claims this notebook tests
# Computed from this run by `vaccine_lib.claims` with the same inputs, judges and rule as notebook 06, which writes
# them to `figures/tables/claims.csv` (the README shows the same rows; a test compares the committed copies).
# **held**: the 95 % CI excludes 0 in the paper's direction under every judge; **refuted**: it excludes 0 the
# other way; otherwise **inconclusive**.

# %% tags=["claims"]
# NBVAL_IGNORE_OUTPUT
from IPython.display import Markdown

from vaccine_lib import claims as C

Markdown(C.notebook_claims(P, RUN, TAB, "01"))

# %% [markdown]
# ## Answers of the SFT model fine-tuned at the largest p
# **Content warning.** The next cell shows model answers to harmful questions, truncated to a few words and
# labelled by the judge; the full text stays in `runs/<profile>/eval/` (git-ignored) and is never committed.
# The committed notebooks carry no output for this cell.

# %% tags=["generations"]
# NBVAL_IGNORE_OUTPUT
tables.generations(P, RUN, registry.finetune_config(P, "SFT", p=max(P.sweeps.ps)), n=3, max_chars=120)
