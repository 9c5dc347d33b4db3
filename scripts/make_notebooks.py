"""Generate notebooks/NN_*.ipynb from the cell lists below, so the five notebooks stay consistent.

    python scripts/make_notebooks.py            # (re)write every notebook
    python scripts/make_notebooks.py --check    # exit 1 if a notebook differs from what would be written

Each notebook: a header (the paper claim it tests, the table/figure, expected runtime per profile,
the measured result placeholder), ONE cell tagged ``parameters`` (plain values), a validation cell
right after it, then calls into vaccine_lib and plots through vaccine_lib.plotting.
Markdown cells that start with ``<!-- keep -->`` in an existing notebook (e.g. the filled-in
result sentence) are preserved when regenerating.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vaccine_lib.profiles import get_profile  # noqa: E402

RESULT_PLACEHOLDER = ("<!-- keep -->\n**Result on the default profile:** _TBD after the default run_ "
                      "(placeholder: to be filled in from the measured default run, with numbers).")

PARAMETERS = '''profile = "default"    # smoke | default | full | paper, or the path of a profile YAML file
seed = None            # None: the profile's seeds; an int runs a single seed
run_dir = None         # None: runs/<profile> (stage cache shared by all notebooks)
figures_dir = None     # None: figures/ for the default profile, results/<profile>/figures otherwise
tables_dir = None      # None: <figures_dir>/tables
overrides = {}         # profile fields to change, e.g. {"finetune": {"ps": [0.0, 0.2]}}'''

VALIDATE = '''# Validate the parameters: an unknown name or an out-of-range value stops here with the allowed values.
from vaccine_lib.profiles import describe, from_notebook

ctx = from_notebook(globals())
P, RUN, FIG, TAB = ctx.profile, ctx.run_dir, ctx.figures_dir, ctx.tables_dir
print(describe(P))'''

IMPORTS = '''import pandas as pd

from vaccine_lib import experiments as ex
from vaccine_lib import plotting as pl
from vaccine_lib.experiments import Point

ex.quiet()  # hide library deprecation warnings in the outputs

pd.set_option("display.precision", 2)
pd.set_option("display.width", 160)'''

WARNING = ("**Content warning.** The next cell shows model answers to harmful questions, "
           "truncated to a few words and labelled by the judge; the full text stays in "
           "`runs/<profile>/generations/` (git-ignored) and is never committed.")


def runtime_line(nb: str) -> str:
    parts = []
    hw = {"smoke": "2 CPU cores", "default": "2 CPU cores, cold cache", "full": "2 CPU cores, 3 seeds",
          "paper": "one A100 80GB, estimate"}
    for name in ("smoke", "default", "full", "paper"):
        minutes = get_profile(name).runtime.get(nb)
        if minutes is None:
            continue
        shown = f"{minutes:g} min" if minutes < 120 else f"{minutes / 60:.0f} h"
        parts.append(f"`{name}` ~{shown} ({hw[name]})")
    return ("**Expected runtime:** " + "; ".join(parts)
            + ". Stages are cached in `runs/<profile>/`, so a rerun (or a later notebook that needs the same "
              "models) takes seconds.")


def header(nb: str, title: str, claim: str, paper: str, how: str) -> str:
    return (f"# {title}\n\n**Paper claim tested.** {claim}\n\n**Paper reference.** {paper}\n\n"
            f"**How.** {how}\n\n{runtime_line(nb)}")


def code(src: str, check: bool = False, ignore: bool = False, tags=()):
    if check:
        src = "# NBVAL_CHECK_OUTPUT\n" + src
    if ignore:
        src = "# NBVAL_IGNORE_OUTPUT\n" + src
    cell = new_code_cell(src)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def md(text: str):
    return new_markdown_cell(text)


def common(nb: str, title: str, claim: str, paper: str, how: str) -> list:
    return [
        md(header(nb, title, claim, paper, how)),
        md(RESULT_PLACEHOLDER),
        code(PARAMETERS, tags=("parameters",)),
        code(VALIDATE, ignore=True),
        code(IMPORTS),
    ]


# --------------------------------------------------------------------------- 01

NB01 = common(
    "01", "01 · Harmful embedding drift",
    "Fine-tuning on data with a fraction p of harmful samples breaks alignment, and the break comes with "
    "*harmful embedding drift*: as p grows, the harmful score, the alignment loss and the drift of the "
    "hidden embeddings of the alignment data all grow, for the SFT-aligned model as for the Non-Aligned one.",
    "Section 3, Figure 2 (HS, fine-tune accuracy, alignment loss and drift vs harmful ratio; Llama2-7B, SST2).",
    "Non-Aligned (no alignment) and SFT-aligned models are fine-tuned on `n` user samples at each harmful ratio "
    "in `finetune.ps`; each model is evaluated (HS on unseen harmful prompts, FA on the task) and its drift is "
    "measured against its starting point on `drift.n_samples` fixed alignment samples (attention outputs of "
    "every layer; `drift` = RMS per token, `drift_sum_sq` = the reference code's summed squared L2).",
) + [
    md("## Fine-tune at every harmful ratio"),
    code('df = ex.run_grid(P, RUN, ex.table1_points(P, defenses=["NA", "SFT"]))', ignore=True),
    code('cols = ["defense", "p", "seed", "hs", "refusal", "label_only", "fa", "align_loss", "drift", "drift_sum_sq"]\n'
         'pl.save_table(df[cols], "fig2_harmful_drift", TAB)\n'
         'print(df[["defense", "p", "hs", "refusal", "fa", "align_loss"]].round(1).to_string(index=False))', check=True),
    md("## Figure 2: HS, FA, alignment loss and drift vs p"),
    code('fig = pl.lines(df, "p", ["hs", "fa", "align_loss", "drift"], hue="defense")\n'
         'pl.save_fig(fig, "fig2_harmful_drift", FIG);'),
    md("## Does each quantity grow with p?\nSpearman rank correlation with p per method "
       "(+1: grows monotonically; NaN: constant)."),
    code('tr = ex.trend(df, "p", ["hs", "align_loss", "drift"])\n'
         'pl.save_table(tr, "fig2_trend", TAB)\ntr.round(2)', ignore=True),
    md("## Answers of the SFT model fine-tuned at the largest p\n" + WARNING),
    code('ex.generations(P, RUN, Point("SFT", p=max(P.finetune.ps)), n=3, max_chars=120)', ignore=True),
]

# --------------------------------------------------------------------------- 02

NB02 = common(
    "02", "02 · Vaccine alignment vs SFT alignment",
    "Vaccine aligns the model while every layer's hidden embedding is pushed by a worst-case perturbation of "
    "norm rho (Algorithm 1). It costs a second forward/backward pass per step (~2x SFT), reaches a somewhat higher "
    "clean loss at equal steps, and the aligned model is as safe as the SFT-aligned one before any user fine-tuning.",
    "Section 4, Algorithm 1, Eq. 1-3; Table 5 (step time); the aligned models' HS is the 'clean' column of Table 1.",
    "Align the base model with SFT and with Vaccine (`align.rho`) on `align.n` samples (refusals + helpful answers), "
    "log the per-step loss, the pass-1 (clean) loss, the global gradient norm of dL/de and the perturbation norm, "
    "then evaluate the base and both aligned models before user fine-tuning.",
) + [
    md("## Align and evaluate (no user fine-tuning yet)"),
    code('aligned = ex.run_aligned(P, RUN)', ignore=True),
    code('pl.save_table(aligned, "aligned_models", TAB)\n'
         'print(aligned[["model", "hs", "refusal", "label_only", "fa", "align_loss"]].round(1).to_string(index=False))',
         check=True),
    code('fig = pl.bars(aligned, "model", ["hs", "refusal", "fa"], annotate="{:.0f}")\n'
         'pl.save_fig(fig, "aligned_models", FIG);'),
    md("## Training curves and perturbation norms\n`loss` is the loss the optimizer steps on (for Vaccine: the "
       "perturbed pass-2 loss); `vaccine/clean_loss` is the pass-1 loss of the same batch, `vaccine/grad_norm` the "
       "global norm of dL/de over all layers, `vaccine/eps_norm` the norm of the applied perturbation (= rho)."),
    code('H = ex.align_histories(P, RUN)\n'
         'keys = ["loss", "vaccine/clean_loss", "vaccine/grad_norm", "vaccine/eps_norm"]\n'
         'curves = ex.history_frame(H, keys)\n'
         'pl.save_table(curves, "alignment_curves", TAB)\n'
         'fig = pl.training_curves(H, keys=keys)\n'
         'pl.save_fig(fig, "alignment_curves", FIG);'),
    code('t = aligned.set_index("method")["train_seconds"]\n'
         'print(f"alignment time: SFT {t[\'sft\']:.1f} s, Vaccine {t[\'vaccine\']:.1f} s "\n'
         '      f"({t[\'vaccine\'] / t[\'sft\']:.2f}x; the paper reports ~1.97x per step)")', ignore=True),
    md("## Answers of the aligned models to harmful prompts\n" + WARNING),
    code('for m in ("sft", "vaccine"):\n'
         '    print(m.upper() + "-aligned:")\n'
         '    display(ex.generations(P, RUN, ex.align_config(P, m), n=3, max_chars=120))', ignore=True),
]

# --------------------------------------------------------------------------- 03

NB03 = common(
    "03", "03 · Harmful fine-tuning: Vaccine vs the baselines",
    "Vaccine gives the lowest harmful score among Non-Aligned, SFT, EWC, Vlguard and KL across harmful ratios "
    "(Table 1) and sample counts (Table 2) and on several tasks (Table 4), at a fine-tune accuracy close to SFT's.",
    "Table 1 (p = clean..0.2, n = 1000), Table 2 (n = 500..2500, p = 0.05), Table 4 (SST2, AG News, GSM8K, "
    "AlpacaEval); Llama2-7B.",
    "Every method in `finetune.defenses` is fine-tuned at every p in `finetune.ps` (Table 1), the methods in "
    "`finetune.sample_defenses` at every n in `finetune.sample_counts` (Table 2), and every method on every task in "
    "`finetune.tasks` at p = `finetune.p` (Table 4); all models are evaluated with the same prompts and judge. "
    "Mean over the profile's seeds (± SD when there are several).",
) + [
    md("## Table 1: harmful ratio p"),
    code('t1 = ex.run_grid(P, RUN, ex.table1_points(P), with_drift=False)', ignore=True),
    code('pl.save_table(t1, "table1_defenses", TAB)\n'
         'print("HS (%)"); print(ex.pivot(t1, "hs").to_string())\n'
         'print("FA (%)"); print(ex.pivot(t1, "fa").to_string())', check=True),
    code('fig = pl.metric_vs_p(t1, ["hs", "fa"])\npl.save_fig(fig, "table1_hs_fa_vs_p", FIG);'),
    code('print("Vaccine minus SFT harmful score, per p:")\nex.compare(t1, "Vaccine", "SFT", "hs").round(1)', ignore=True),
    md("## Table 2: number of fine-tuning samples"),
    code('t2 = ex.run_grid(P, RUN, ex.table2_points(P), with_drift=False)', ignore=True),
    code('pl.save_table(t2, "table2_sample_counts", TAB)\n'
         'print("HS (%)"); print(ex.pivot(t2, "hs", columns="n").to_string())\n'
         'print("FA (%)"); print(ex.pivot(t2, "fa", columns="n").to_string())', check=True),
    code('fig = pl.lines(t2, "n", ["hs", "fa"])\npl.save_fig(fig, "table2_sample_counts", FIG);'),
    md("## Table 4: tasks\nOffline, the profiles have SST2-like sentiment (Rotten Tomatoes) and GSM8K-like math "
       "(GSM-Symbolic); AG News and AlpacaEval need the Hugging Face Hub (`data_source: hub`, the paper profile)."),
    code('t4 = ex.run_grid(P, RUN, ex.table4_points(P), with_drift=False)', ignore=True),
    code('pl.save_table(t4, "table4_tasks", TAB)\n'
         'print("HS (%)"); print(ex.pivot(t4, "hs", columns="task").to_string())\n'
         'print("FA (%)"); print(ex.pivot(t4, "fa", columns="task").to_string())', check=True),
    code('fig = pl.heat_table(ex.pivot(t4, "hs", columns="task"), title="Harmful score (%) per task")\n'
         'pl.save_fig(fig, "table4_tasks", FIG);'),
    md("## Answers of Vaccine and SFT after harmful fine-tuning\n" + WARNING),
    code('for d in ("SFT", "Vaccine"):\n'
         '    print(d + ":")\n'
         '    display(ex.generations(P, RUN, Point(d), n=3, max_chars=120))', ignore=True),
]

# --------------------------------------------------------------------------- 04

NB04 = common(
    "04", "04 · Evaluation beside the paper, drift during fine-tuning, and ablations",
    "(a) Our tables beside the paper's numbers. (b) During harmful fine-tuning the SFT model's embedding drift and "
    "alignment loss escalate, Vaccine's stay smaller (Fig. 3). (c) t-SNE of the alignment embeddings shows the drift "
    "(Fig. 4). (d) A larger rho lowers the harmful score at some cost in accuracy (Table 6). (e) The gradient "
    "perturbation beats random Gaussian noise of the same size (Table 7). (f) Double-LoRA vs Single-LoRA (Table 8). "
    "(g) How far the judge behind every harmful score can be trusted.",
    "Table 1 (beside ours), Figure 3, Figure 4, Tables 6, 7, 8; BeaverDam's role (Section 5.1).",
    "All models come from the same cached stages as notebooks 01-03 where they coincide; the SFT and Vaccine models "
    "at p = `finetune.p` log drift and alignment loss every `drift.every_steps` steps while they are fine-tuned.",
) + [
    md("## (a) Table 1 beside the paper\nThe paper: Llama2-7B, BeaverTails, n = 1000, BeaverDam judge. Ours: the "
       "profile's model, data and judge, so only the *direction* of the differences is comparable."),
    code('t1 = ex.run_grid(P, RUN, ex.table1_points(P), with_drift=False, progress=False)', ignore=True),
    code('side = ex.side_by_side(t1, ex.paper_table1(), "hs")\n'
         'pl.save_table(side.reset_index(), "table1_vs_paper", TAB)\nside'),
    md("## (b) Figure 3: drift and alignment loss during fine-tuning"),
    code('ex.run_grid(P, RUN, ex.drift_points(P), progress=False)\ndh = ex.drift_history(P, RUN)', ignore=True),
    code('pl.save_table(dh, "fig3_drift_during_finetuning", TAB)\n'
         'last = dh.sort_values("step").groupby("defense").tail(1)\n'
         'print(last[["defense", "step", "align_loss"]].round(2).to_string(index=False))', check=True),
    code('fig = pl.drift_curves(dh, ["drift", "align_loss"])\npl.save_fig(fig, "fig3_drift_during_finetuning", FIG);'),
    md("## (c) Figure 4: t-SNE of the alignment data's embeddings\nMean attention output of the last layer per "
       "alignment sample, for the aligned models and the same models after harmful fine-tuning (one joint t-SNE)."),
    code('targets = {\n'
         '    "SFT-aligned": ex.align_config(P, "sft"),\n'
         '    "SFT fine-tuned": ex.finetune_config(P, Point("SFT")),\n'
         '    "Vaccine-aligned": ex.align_config(P, "vaccine"),\n'
         '    "Vaccine fine-tuned": ex.finetune_config(P, Point("Vaccine")),\n'
         '}\n'
         'emb = ex.tsne_frame(P, RUN, targets)\n'
         'pl.save_table(emb, "fig4_tsne", TAB)\n'
         'fig = pl.scatter_2d(emb, hue="model")\npl.save_fig(fig, "fig4_tsne", FIG);', ignore=True),
    md("## (d) Table 6: perturbation intensity rho\nSFT is the rho = 0 reference."),
    code('t6 = ex.run_grid(P, RUN, [Point("SFT")] + ex.rho_points(P), with_drift=False)', ignore=True),
    code('t6 = t6.sort_values("rho")\npl.save_table(t6, "table6_rho", TAB)\n'
         'print(t6[["defense", "rho", "hs", "fa"]].round(1).to_string(index=False))', check=True),
    code('fig = pl.lines(t6.assign(method="Vaccine"), "rho", ["hs", "fa"], hue="method")\n'
         'pl.save_fig(fig, "table6_rho", FIG);'),
    md("## (e) Table 7: gradient vs random (Gaussian) perturbation\nThe Gaussian variant draws i.i.d. noise with the "
       "same budget, E||eps||^2 = rho^2, and skips pass 1."),
    code('t7 = ex.run_grid(P, RUN, ex.perturbation_points(P), with_drift=False)', ignore=True),
    code('pl.save_table(t7, "table7_perturbation", TAB)\n'
         'print(t7[["perturbation", "rho", "hs", "fa"]].round(1).to_string(index=False))', check=True),
    md("## (f) Table 8: Double-LoRA vs Single-LoRA\nDouble: the alignment adapter is merged and a fresh adapter is "
       "trained on the user data (paper default). Single: the alignment adapter keeps training."),
    code('t8 = ex.run_grid(P, RUN, ex.lora_points(P), with_drift=False)', ignore=True),
    code('pl.save_table(t8, "table8_lora", TAB)\n'
         'print(t8[["defense", "lora", "hs", "fa"]].round(1).to_string(index=False))', check=True),
    md("## (g) The judge\nEvery harmful score above is the share of answers this judge flags. Its accuracy and AUC "
       "on held-out labelled responses (and on probe texts: refusals, junk, label-only answers) bound how much a "
       "difference of a few points means."),
    code('from vaccine_lib.judge import format_report, validation_report\n\n'
         'rep = validation_report(P.eval.judge)', ignore=True),
    code('print(format_report(rep))', ignore=True),
    code('c = rep["confusion"]\n'
         'jv = pd.DataFrame([{"judge": rep["judge"], "accuracy": rep["accuracy"], "auc": rep["auc"], '
         '"n_test": rep["n_test"], **c}])\n'
         'pl.save_table(jv, "judge_validation", TAB)\n'
         'print(jv[["judge", "accuracy", "auc", "n_test"]].round(2).to_string(index=False))', check=True),
]

# --------------------------------------------------------------------------- 05

NB05 = common(
    "05", "05 · System overhead",
    "A Vaccine step costs about twice an SFT step (two forward/backward passes) with almost no extra memory "
    "(the perturbation is one tensor per layer); Accelerated Vaccine, which perturbs only every tau-th step, "
    "costs about as much as SFT.",
    "Table 5 (A100: SFT 0.37 s vs Vaccine 0.73 s per step, 38.45 vs 38.57 GB), Table 10 / Appendix A "
    "(tau = 100: 1.02x).",
    "The same LoRA model is trained on one fixed batch (`overhead.batch_size` x `overhead.seq_len` tokens) for "
    "`overhead.warmup_steps` + `overhead.steps` optimizer steps with SFT, Vaccine and Accelerated Vaccine "
    "(`overhead.taus`); we report the mean step time and the peak memory (CUDA peak allocation on a GPU, peak "
    "resident memory of the process on CPU).",
) + [
    md("## Measure"),
    code('ov = ex.measure_overhead(P)\npl.save_table(ov, "table5_overhead", TAB)\nov.round(3)', ignore=True),
    code('fig = pl.bars(ov, "method", ["step_s", "peak_memory_gb"], '
         'ylabels={"step_s": "Seconds per step", "peak_memory_gb": "Peak memory (GB)"})\n'
         'pl.save_fig(fig, "table5_overhead", FIG);'),
    code('print(f"methods measured: {len(ov)}; steps each: {int(ov[\'steps\'].iloc[0])}")', check=True),
    md("## Beside the paper"),
    code('paper = pd.DataFrame([{"method": m, **v} for m, v in ex.PAPER_TABLE5.items()])\n'
         'paper["slowdown"] = paper["step_s"] / paper["step_s"].iloc[0]\n'
         'ours = ov.set_index("method")["slowdown"].round(2)\n'
         'print("paper (A100, Llama2-7B):"); print(paper.round(2).to_string(index=False))\n'
         'print("\\nours: slowdown vs SFT"); print(ours.to_string())', ignore=True),
]

NOTEBOOKS = {
    "01_harmful_embedding_drift.ipynb": NB01,
    "02_vaccine_alignment.ipynb": NB02,
    "03_harmful_finetuning.ipynb": NB03,
    "04_evaluation_and_ablations.ipynb": NB04,
    "05_system_overhead.ipynb": NB05,
}


def build(cells) -> nbformat.NotebookNode:
    nb = new_notebook(cells=[nbformat.from_dict(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (vaccine)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, c in enumerate(nb.cells):
        c["id"] = f"cell-{i:02d}"
        if c.cell_type == "code":
            c.outputs = []
            c.execution_count = None
    return nb


def _kept(path: Path) -> dict[int, str]:
    """Markdown cells marked <!-- keep --> in an existing notebook, by position."""
    if not path.exists():
        return {}
    old = nbformat.read(path, as_version=4)
    return {i: c.source for i, c in enumerate(old.cells)
            if c.cell_type == "markdown" and c.source.startswith("<!-- keep -->")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "notebooks"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stale = []
    for name, cells in NOTEBOOKS.items():
        path = out / name
        nb = build(cells)
        for i, src in _kept(path).items():
            if i < len(nb.cells) and nb.cells[i].cell_type == "markdown" and nb.cells[i].source.startswith("<!-- keep -->"):
                nb.cells[i].source = src
        text = nbformat.writes(nb) + "\n"
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("out of date (run python scripts/make_notebooks.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
