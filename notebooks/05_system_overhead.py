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
# # 05 · System overhead
#
# **Paper claim tested.** A Vaccine step costs about twice an SFT step (two forward/backward passes) with almost no
# extra memory (the perturbation is one tensor per layer); Accelerated Vaccine, which perturbs only every tau-th step,
# costs about as much as SFT.
#
# **Paper reference.** Table 5 (A100: SFT 0.37 s vs Vaccine 0.73 s per step, 38.45 vs 38.57 GB), Table 10 /
# Appendix A (tau = 100: 1.02x).
#
# **How.** `benchmarks.overhead` (the same measurement as `make bench`): each method trains the profile's
# LoRA model on the same real alignment batches (`overhead.batch_size` x `overhead.seq_len` tokens) for
# `overhead.warmup_steps` + `overhead.steps` optimizer steps in a fresh process, with SFT, Vaccine and Accelerated
# Vaccine (`overhead.taus`), repeated `overhead.rounds` times in alternating order (SFT first, then last, ...) so
# that a drift of a shared CPU's speed falls on every method alike; we report the mean step time (± SD over the
# pooled steps) and the peak memory (CUDA peak allocation on a GPU, peak resident memory of the process on CPU).
# Claims C4 and C5 (notebook 06) take each round's ratio to SFT's and a t-interval over rounds, so a speed change
# between rounds widens their CI rather than hiding in it.
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
from vaccine_lib.claims import paper

P, RUN, FIG, TAB = tables.notebook_setup(globals())  # quiet warnings, pandas display, validated profile

# %% [markdown]
# ## Measure

# %%
# NBVAL_IGNORE_OUTPUT
print(registry.describe_plan(P, RUN, "table5"))  # the design: grid per method, stage keys, cached or not

# %%
# NBVAL_IGNORE_OUTPUT
from benchmarks import overhead

ov = overhead.from_profile(P)
plotting.save_table(ov, "table5_overhead", TAB)
ov.round(3)

# %%
# NBVAL_CHECK_OUTPUT
print("methods: SFT, Vaccine and one Accelerated Vaccine per tau:", len(ov) == 2 + len(P.overhead.taus),
      "| step times finite and > 0:", bool((ov["step_s"] > 0).all()), "| SFT slowdown = 1:",
      bool(abs(ov["slowdown"].iloc[0] - 1) < 1e-9))

# %%
fig = plotting.bars(ov, "method", ["step_s", "peak_memory_gb"],
              ylabels={"step_s": "Seconds per step", "peak_memory_gb": "Peak memory (GB)"})
plotting.save_fig(fig, "table5_overhead", FIG);

# %% [markdown]
# ## Beside the paper

# %%
# NBVAL_IGNORE_OUTPUT
paper = paper.table5()
paper["slowdown"] = paper["step_s"] / paper["step_s"].iloc[0]
print("paper (A100, Llama2-7B):"); print(paper.round(2).to_string(index=False))
print("\nours: slowdown vs SFT"); print(ov.set_index("method")["slowdown"].round(2).to_string())

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

Markdown(C.notebook_claims(P, RUN, TAB, "05"))
