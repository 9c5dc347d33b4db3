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
# # 03 · Harmful fine-tuning: Vaccine vs the baselines
#
# **Paper claim tested.** Vaccine gives the lowest harmful score among Non-Aligned, SFT, EWC, Vlguard and KL across
# harmful ratios (Table 1) and sample counts (Table 2) and on several tasks (Table 4), at a fine-tune accuracy close
# to SFT's.
#
# **Paper reference.** Table 1 (p = clean..0.2, n = 1000), Table 2 (n = 500..2500, p = 0.05), Table 4 (SST2,
# AG News, GSM8K, AlpacaEval); Llama2-7B.
#
# **How.** Registry entries `table1` (every method in `sweeps.defenses` at every p in `sweeps.ps`), `table2`
# (`sweeps.sample_defenses` at every n in `sweeps.sample_counts`) and `table4` (every method on every task in
# `sweeps.tasks` at p = `finetune.p`); all models are evaluated with the same prompts and judge. Mean over the
# profile's seeds (± SD when there are several).
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
# ## Table 1: harmful ratio p

# %%
# NBVAL_IGNORE_OUTPUT
print(registry.describe_plan(P, RUN, "table1"))  # the design: grid per method, stage keys, cached or not

# %%
# NBVAL_IGNORE_OUTPUT
t1 = tables.run(P, RUN, "table1")

# %%
# NBVAL_CHECK_OUTPUT
plotting.save_table(t1, "table1_defenses", TAB)
print(tables.check(t1, P, "table1"))

# %%
# NBVAL_IGNORE_OUTPUT
print("HS (%)"); print(tables.pivot(t1, "hs").to_string())
print("FA (%)"); print(tables.pivot(t1, "fa").to_string())

# %%
fig = plotting.lines(t1, "p", ["hs", "fa"])
plotting.save_fig(fig, "table1_hs_fa_vs_p", FIG, data=t1);

# %%
# NBVAL_IGNORE_OUTPUT
print("Vaccine minus SFT harmful score, per p (means over seeds; CIs and verdicts: notebook 06):")
tables.compare(t1, "Vaccine", "SFT", "hs").round(1)

# %% [markdown]
# Beside HS and FA: answer length on harmful prompts (`mean_words`; a "safer" model may only be shorter), empty
# and degenerate answers (a broken model is not a safe one), over-refusal of 100 held-out benign instructions
# (`benign_refusal`) and the share of the most common task answer (`fa_top_answer_share`; one label for everything
# means the task was not learned). Mean ± SD over seeds.

# %%
# NBVAL_IGNORE_OUTPUT
cols = ["hs", "fa", "mean_words", "empty_rate", "degenerate_rate", "benign_refusal", "fa_top_answer_share"]
ms = plotting.mean_sd(t1, ["defense", "p"], [c for c in cols if c in t1])
ms.round(1)

# %% [markdown]
# ## Table 2: number of fine-tuning samples

# %%
# NBVAL_IGNORE_OUTPUT
print(registry.describe_plan(P, RUN, "table2"))  # the design: grid per method, stage keys, cached or not

# %%
# NBVAL_IGNORE_OUTPUT
t2 = tables.run(P, RUN, "table2")

# %%
# NBVAL_CHECK_OUTPUT
plotting.save_table(t2, "table2_sample_counts", TAB)
print(tables.check(t2, P, "table2"))

# %%
# NBVAL_IGNORE_OUTPUT
print("HS (%)"); print(tables.pivot(t2, "hs", columns="n").to_string())
print("FA (%)"); print(tables.pivot(t2, "fa", columns="n").to_string())

# %%
# NBVAL_IGNORE_OUTPUT
if t2["n"].nunique() > 1:
    fig = plotting.lines(t2, "n", ["hs", "fa"])
    plotting.save_fig(fig, "table2_sample_counts", FIG, data=t2);
else:
    print(f"one sample count (n = {t2['n'].iloc[0]}) in this profile: not a sweep, no figure (the full profile "
          "sweeps sweeps.sample_counts).")

# %% [markdown]
# ## Table 4: tasks
# Offline, the profiles have SST2-like sentiment (Rotten Tomatoes) and GSM8K-like math (GSM-Symbolic); AG News and
# AlpacaEval need the Hugging Face Hub (`data_source: hub`, the paper profile).

# %%
# NBVAL_IGNORE_OUTPUT
print(registry.describe_plan(P, RUN, "table4"))  # the design: grid per method, stage keys, cached or not

# %%
# NBVAL_IGNORE_OUTPUT
t4 = tables.run(P, RUN, "table4")

# %%
# NBVAL_CHECK_OUTPUT
plotting.save_table(t4, "table4_tasks", TAB)
print(tables.check(t4, P, "table4"))

# %%
# NBVAL_IGNORE_OUTPUT
print("HS (%)"); print(tables.pivot(t4, "hs", columns="task").to_string())
print("FA (%)"); print(tables.pivot(t4, "fa", columns="task").to_string())

# %%
# NBVAL_IGNORE_OUTPUT
if t4["task"].nunique() > 1:
    fig = plotting.heat_table(tables.pivot(t4, "hs", columns="task"), title="Harmful score (%) per task")
    plotting.save_fig(fig, "table4_tasks", FIG, data=t4);
else:
    print(f"one task ({t4['task'].iloc[0]}) in this profile: Table 4 runs in the full profile (sweeps.tasks).")

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

Markdown(C.notebook_claims(P, RUN, TAB, "03"))

# %% [markdown]
# ## Answers of Vaccine and SFT after harmful fine-tuning
# **Content warning.** The next cell shows model answers to harmful questions, truncated to a few words and
# labelled by the judge; the full text stays in `runs/<profile>/eval/` (git-ignored) and is never committed.
# The committed notebooks carry no output for this cell.

# %% tags=["generations"]
# NBVAL_IGNORE_OUTPUT
for d in ("SFT", "Vaccine"):
    print(d + ":")
    display(tables.generations(P, RUN, registry.finetune_config(P, d), n=3, max_chars=120))
