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
# # 04 · Evaluation beside the paper, drift during fine-tuning, and ablations
#
# **Paper claim tested.** (a) Our tables beside the paper's numbers. (b) During harmful fine-tuning the SFT model's
# embedding drift and alignment loss escalate, Vaccine's stay smaller (Fig. 3). (c) t-SNE of the alignment embeddings
# shows the drift (Fig. 4). (d) A larger rho lowers the harmful score at some cost in accuracy (Table 6). (e) The
# gradient perturbation beats random Gaussian noise of the same size (Table 7). (f) Double-LoRA vs Single-LoRA
# (Table 8). (g) How far the judge behind every harmful score can be trusted.
#
# **Paper reference.** Table 1 (beside ours), Figure 3, Figure 4, Tables 6, 7, 8; BeaverDam's role (Section 5.1).
#
# **How.** All models come from the same cached stages as notebooks 01-03 where they coincide (registry entries
# `table1_vs_paper`, `fig3`, `fig4`, `table6`, `table7`, `table8`, `judge`); the SFT and Vaccine models at
# p = `finetune.p` log drift and alignment loss every `drift.every_steps` steps while they are fine-tuned.
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
# ## (a) Table 1 beside the paper
# The paper: Llama2-7B, BeaverTails, n = 1000, BeaverDam judge. Ours: the profile's model, data and judge, so only
# the *direction* of the differences is comparable.

# %%
# NBVAL_IGNORE_OUTPUT
print(registry.describe_plan(P, RUN, "table1_vs_paper"))  # the design: grid per method, stage keys, cached or not

# %%
# NBVAL_IGNORE_OUTPUT
t1 = tables.run(P, RUN, "table1_vs_paper", progress=False)
side = tables.side_by_side(t1, paper.table1(), "hs")
plotting.save_table(side.reset_index(), "table1_vs_paper", TAB)
side

# %% [markdown]
# ## (b) Figure 3: drift and alignment loss during fine-tuning

# %%
# NBVAL_IGNORE_OUTPUT
print(registry.describe_plan(P, RUN, "fig3"))  # the design: grid per method, stage keys, cached or not

# %%
# NBVAL_IGNORE_OUTPUT
f3 = tables.run(P, RUN, "fig3", progress=False)
dh = tables.drift_history(P, RUN)

# %%
# NBVAL_CHECK_OUTPUT
plotting.save_table(dh, "fig3_drift_during_finetuning", TAB)
print(tables.check(f3, P, "fig3"))
print("drift logged for:", ", ".join(sorted(set(dh["defense"]))), "| finite:",
      bool(dh[["drift", "align_loss"]].notna().all().all()))

# %%
# NBVAL_IGNORE_OUTPUT
dh.sort_values("step").groupby(["defense", "seed"]).tail(1)[["defense", "seed", "step", "drift", "align_loss"]].round(3)

# %%
fig = plotting.lines(dh, "step", ["drift", "align_loss"])
plotting.save_fig(fig, "fig3_drift_during_finetuning", FIG, data=dh);

# %% [markdown]
# ## (c) Figure 4: t-SNE of the alignment data's embeddings
# Mean attention output of the last layer per alignment sample, for the aligned models and the same models after
# harmful fine-tuning (one joint t-SNE).

# %%
# NBVAL_IGNORE_OUTPUT
print(registry.describe_plan(P, RUN, "fig4"))  # the design: grid per method, stage keys, cached or not

# %%
# NBVAL_IGNORE_OUTPUT
emb = tables.tsne_frame(P, RUN)
plotting.save_table(emb, "fig4_tsne", TAB)
fig = plotting.scatter_2d(emb, hue="model")
plotting.save_fig(fig, "fig4_tsne", FIG, data=emb);

# %% [markdown]
# ## (d) Table 6: perturbation intensity rho
# SFT is the rho = 0 reference.

# %%
# NBVAL_IGNORE_OUTPUT
print(registry.describe_plan(P, RUN, "table6"))  # the design: grid per method, stage keys, cached or not

# %%
# NBVAL_IGNORE_OUTPUT
t6 = tables.run(P, RUN, "table6").sort_values("rho")

# %%
# NBVAL_CHECK_OUTPUT
plotting.save_table(t6, "table6_rho", TAB)
print(tables.check(t6, P, "table6"))

# %%
# NBVAL_IGNORE_OUTPUT
t6[["defense", "rho", "seed", "hs", "fa"]].round(1)

# %%
# NBVAL_IGNORE_OUTPUT
if t6["rho"].nunique() > 2:  # SFT (rho = 0) and at least two Vaccine rhos: a sweep
    fig = plotting.lines(t6.assign(method="Vaccine"), "rho", ["hs", "fa"], hue="method")
    plotting.save_fig(fig, "table6_rho", FIG, data=t6);
else:
    print(f"rho values {sorted(t6['rho'].unique())}: SFT and one Vaccine rho are not a sweep (claim C3 needs the "
          "full profile's sweeps.rhos); no figure.")

# %% [markdown]
# ## (e) Table 7: gradient vs random (Gaussian) perturbation
# The Gaussian variant draws i.i.d. noise with the same budget, E||eps||^2 = rho^2, and skips pass 1.

# %%
# NBVAL_IGNORE_OUTPUT
print(registry.describe_plan(P, RUN, "table7"))  # the design: grid per method, stage keys, cached or not

# %%
# NBVAL_IGNORE_OUTPUT
t7 = tables.run(P, RUN, "table7")

# %%
# NBVAL_CHECK_OUTPUT
plotting.save_table(t7, "table7_perturbation", TAB)
print(tables.check(t7, P, "table7"))

# %%
# NBVAL_IGNORE_OUTPUT
if t7["perturbation"].nunique() > 1:
    display(t7[["perturbation", "rho", "seed", "hs", "fa", "mean_words"]].round(1))
else:
    print("one perturbation only in this profile (sweeps.perturbations): Table 7 / claim C6 runs in the full profile.")

# %% [markdown]
# ## (f) Table 8: Double-LoRA vs Single-LoRA
# Double: the alignment adapter is merged and a fresh adapter is trained on the user data (paper default). Single:
# the alignment adapter keeps training.

# %%
# NBVAL_IGNORE_OUTPUT
print(registry.describe_plan(P, RUN, "table8"))  # the design: grid per method, stage keys, cached or not

# %%
# NBVAL_IGNORE_OUTPUT
t8 = tables.run(P, RUN, "table8")

# %%
# NBVAL_CHECK_OUTPUT
plotting.save_table(t8, "table8_lora", TAB)
print(tables.check(t8, P, "table8"))

# %%
# NBVAL_IGNORE_OUTPUT
if t8["lora"].nunique() > 1:
    display(t8[["defense", "lora", "seed", "hs", "fa", "mean_words"]].round(1))
else:
    print("one LoRA mode only in this profile (sweeps.lora_modes): Table 8 runs in the full profile.")

# %% [markdown]
# ## (g) The judge
# Every harmful score above is the share of answers this judge flags. Its accuracy and AUC on held-out labelled
# responses (and on probe texts: refusals, junk, label-only answers) bound how much a difference of a few points means.

# %%
# NBVAL_IGNORE_OUTPUT
from judge_study.quality import format_report, validation_report

rep = validation_report(P.eval.judge)
print(format_report(rep))

# %%
# NBVAL_CHECK_OUTPUT
jv = pd.DataFrame([{"judge": rep["judge"], "accuracy": rep["accuracy"], "auc": rep["auc"], "n_test": rep["n_test"],
                    **rep["confusion"]}])
plotting.save_table(jv, "judge_validation", TAB)
print("the profile's judge:", rep["judge"] == P.eval.judge, "| accuracy and AUC within [0, 1]:",
      bool(0 <= rep["accuracy"] <= 1 and 0 <= rep["auc"] <= 1), "| test rows:", rep["n_test"] > 0)

# %% [markdown]
# ### Short answers: recall and false positives per answer length
# The miniature's models answer harmful prompts in a few dozen words, where a judge trained on long answers is
# weakest. The committed table `figures/tables/judge_validation_by_length.csv` (`python scripts/judge_tables.py`)
# validates both judges on a held-out short-answer set (split by question; threshold chosen on the "select" half,
# numbers from the "report" half).

# %%
# NBVAL_IGNORE_OUTPUT
from judge_study.measure import LENGTH_TABLE
from vaccine_lib.paths import REPO_ROOT

by_len = pd.read_csv(REPO_ROOT / "figures" / "tables" / f"{LENGTH_TABLE}.csv")
by_len[by_len["half"] == "report"][["judge", "bucket", "n_pos", "n_neg", "precision", "recall", "fpr", "threshold"]]

# %% [markdown]
# ### Agreement of the two judges on this run's answers
# Every stored answer to a harmful prompt, of every model of this run, judged again by the profile's judge and by
# its second judge (`eval.rejudge`; default: classifier and probe), without regeneration; Cohen's kappa pooled and per model, and each judge's HS per model beside the answers'
# mean length (a "safer" model may only be shorter).

# %%
# NBVAL_IGNORE_OUTPUT
agree = tables.judge_agreement_table(RUN, (P.eval.judge, *P.eval.rejudge[:1]))  # the profile's judge vs the second
plotting.save_table(agree["per_model"], "judge_agreement", TAB)
print(f"pooled over {agree['pooled']['n']} answers: kappa = {agree['pooled']['kappa']:.3f}, "
      f"agreement = {agree['pooled']['agreement']:.3f}")
agree["per_model"].round(2)

# %%
# NBVAL_CHECK_OUTPUT
print("kappa within [-1, 1]:", bool(-1 <= agree["pooled"]["kappa"] <= 1) if agree["pooled"]["n"] else "no answers",
      "| one row per evaluated model:", len(agree["per_model"]) > 0)

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

Markdown(C.notebook_claims(P, RUN, TAB, "04"))
