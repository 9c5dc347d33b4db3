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
# # 02 · Vaccine alignment vs SFT alignment
#
# **Paper claim tested.** Vaccine aligns the model while every layer's hidden embedding is pushed by a worst-case
# perturbation of norm rho (Algorithm 1). It costs a second forward/backward pass per step (~2x SFT), reaches a
# somewhat higher clean loss at equal steps, and the aligned model is as safe as the SFT-aligned one before any user
# fine-tuning.
#
# **Paper reference.** Section 4, Algorithm 1, Eq. 1-3; Table 5 (step time); the aligned models' HS is the 'clean'
# column of Table 1.
#
# **How.** Align the base model with SFT and with Vaccine (`align.rho`) on `align.n` samples (refusals + helpful
# answers), log the per-step loss, the pass-1 (clean) loss, the global gradient norm of dL/de and the perturbation
# norm, then evaluate the base and both aligned models before user fine-tuning (registry entry `aligned`).
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
# ## Align and evaluate (no user fine-tuning yet)

# %%
# NBVAL_IGNORE_OUTPUT
print(registry.describe_plan(P, RUN, "aligned"))  # the design: grid per method, stage keys, cached or not

# %%
# NBVAL_IGNORE_OUTPUT
aligned = tables.run_aligned(P, RUN)

# %%
# NBVAL_CHECK_OUTPUT
plotting.save_table(aligned, "aligned_models", TAB)
print(tables.check(aligned, P, "aligned", metrics=["hs", "refusal"]))

# %%
# NBVAL_IGNORE_OUTPUT
aligned[["model", "seed", "hs", "refusal", "label_only", "fa", "align_loss", "train_seconds"]].round(1)

# %%
fig = plotting.bars(aligned, "model", ["hs", "refusal", "fa"], annotate="{:.0f}")
plotting.save_fig(fig, "aligned_models", FIG, data=aligned);

# %% [markdown]
# ## Training curves and perturbation norms
# `loss` is the loss the optimizer steps on (for Vaccine: the perturbed pass-2 loss); `vaccine/clean_loss` is the
# pass-1 loss of the same batch, `vaccine/grad_norm` the global norm of dL/de over all layers, `vaccine/eps_norm`
# the norm of the applied perturbation (= rho).

# %%
H = tables.align_histories(P, RUN)
keys = ["loss", "vaccine/clean_loss", "vaccine/grad_norm", "vaccine/eps_norm"]
curves = tables.history_frame(H, keys)
plotting.save_table(curves, "alignment_curves", TAB)
fig = plotting.training_curves(H, keys=keys)
plotting.save_fig(fig, "alignment_curves", FIG);

# %% [markdown]
# ## Where the perturbation budget goes, layer by layer
# Each layer's share of the summed ||eps||^2 over Vaccine's alignment. Eq. 3 spends one global budget rho along
# the gradient dL/de of every layer's output, so a layer receives rho^2 in proportion to its squared gradient norm;
# the dashed line is the uniform split 1/L. A budget concentrated on a few layers leaves the others unprotected
# (the fair test's ablation `align.budget: per_layer`, rho/sqrt(L) per layer, tests whether that matters).

# %%
share = tables.eps_layer_share(P, RUN)
plotting.save_table(share, "eps_layer_share", TAB)
fig = plotting.bars(share, "layer", ["share"], annotate="{:.2f}")
fig.axes[0].axhline(share["uniform"].iloc[0] if len(share) else 0, ls="--", color="grey", lw=1)
plotting.save_fig(fig, "eps_layer_share", FIG, data=share);

# %%
# NBVAL_CHECK_OUTPUT
print("shares sum to 1:", len(share) > 0 and abs(share["share"].sum() - 1) < 1e-3)

# %%
# NBVAL_IGNORE_OUTPUT
top = share.nlargest(3, "share")
print("largest shares:", ", ".join(f"layer {int(r.layer)} {r.share:.1%}" for r in top.itertuples()),
      f"(uniform {share['uniform'].iloc[0]:.1%})" if len(share) else "none recorded: the cached alignment predates "
      "the record; delete its folder under runs/<profile>/align/ to recompute it")

# %%
# NBVAL_IGNORE_OUTPUT
t = aligned[aligned["seed"] == P.seed].set_index("method")["train_seconds"]
print(f"alignment time: SFT {t['sft']:.1f} s, Vaccine {t['vaccine']:.1f} s ({t['vaccine'] / t['sft']:.2f}x; "
      "the paper reports ~1.97x per step)")

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

Markdown(C.notebook_claims(P, RUN, TAB, "02"))

# %% [markdown]
# ## Answers of the aligned models to harmful prompts
# **Content warning.** The next cell shows model answers to harmful questions, truncated to a few words and
# labelled by the judge; the full text stays in `runs/<profile>/eval/` (git-ignored) and is never committed.
# The committed notebooks carry no output for this cell.

# %% tags=["generations"]
# NBVAL_IGNORE_OUTPUT
for m in ("sft", "vaccine"):
    print(m.upper() + "-aligned:")
    display(tables.generations(P, RUN, registry.align_config(P, m), n=3, max_chars=120))
