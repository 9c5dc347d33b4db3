"""The experiment registry: per paper table / figure its notebook, tables (with their columns), figures and
stage configs (built from a profile; methods: ``config.METHODS``), and what derives from it: :func:`plan` (the
distinct cached stages, run by ``runner``), :func:`describe_plan` (shown in each notebook), :func:`artifacts`."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .config import METHODS, AlignConfig, FinetuneConfig
from .data import check_sizes, check_splits
from .errors import ConfigError, check_choice
from .profiles import NOTEBOOK_IDS, Profile
from .stages import align_key, drift_key, eval_key, finetune_key, is_done, method_label, stage_dir

ALWAYS_SWEPT = ("SFT", "Vaccine")
NOTEBOOKS = {
    "01": "01_harmful_embedding_drift", "02": "02_vaccine_alignment", "03": "03_harmful_finetuning",
    "04": "04_evaluation_and_ablations", "05": "05_system_overhead", "06": "06_claims_and_verdicts",
}
assert tuple(NOTEBOOKS) == NOTEBOOK_IDS
KINDS = ("align", "finetune", "eval", "drift")
KIND_NAMES = {"align": "alignment", "finetune": "fine-tuning", "eval": "evaluation", "drift": "drift"}


def align_config(P: Profile, method: str = "sft", *, seed: int | None = None, rho: float | None = None,
                 perturbation: str = "gradient", tau: int = 1) -> AlignConfig:
    """The profile's alignment stage for ``method`` (none / sft / vaccine)."""
    changes = dict(method=method, seed=P.seed if seed is None else seed)
    if method == "vaccine":
        changes.update(rho=P.align.rho if rho is None else rho, perturbation=perturbation, tau=tau)
    return P.align.with_(**changes)


def finetune_config(P: Profile, label: str, *, p: float | None = None, n: int | None = None, task: str | None = None,
                    seed: int | None = None, rho: float | None = None, perturbation: str = "gradient",
                    lora: str | None = None, track_drift: bool = False) -> FinetuneConfig:
    """The fine-tuning stage of one grid point (paper method ``label``), defaults from the profile. SFT and Vaccine
    at the profile's own (task, n, p, variant) also log drift (Fig. 3), so Tables 1, 2, 8 and Fig. 3 share them."""
    check_choice("method", label, METHODS)
    m = METHODS[label]
    f = P.finetune.for_task(task or P.finetune.task)
    seed = P.seed if seed is None else seed
    a = align_config(P, m.align, seed=P.seed if P.shared_alignment else seed, rho=rho, perturbation=perturbation)
    cfg = f.with_(align=a, defense=m.defense, lora=lora or m.lora, seed=seed,
                  p=f.p if p is None else float(p), n=f.n if n is None else int(n))
    reference = (label in ALWAYS_SWEPT and cfg.task == P.finetune.task and cfg.n == P.finetune.n
                 and cfg.p == P.finetune.p and cfg.lora_mode() == "double" and a.perturbation == "gradient"
                 and a.tau == 1 and (a.method != "vaccine" or a.rho == P.align.rho))
    if track_drift or reference:
        cfg = cfg.with_(drift_every=P.drift.every_steps, drift_samples=P.drift.n_samples)
    return cfg


def variant(a: AlignConfig) -> list[str]:
    """The Vaccine variant of an alignment (rho, a non-gradient perturbation, tau != 1) as label parts."""
    if a.method != "vaccine":
        return []
    return [f"rho={a.rho:g}"] + ([a.perturbation] if a.perturbation != "gradient" else []) \
        + ([f"tau={a.tau}"] if a.tau != 1 else [])


def label_of(cfg: FinetuneConfig) -> str:
    """A short description of a point for progress lines (method, task, p, n, variants, seed)."""
    parts = [method_label(cfg), cfg.task, f"p={cfg.p:g}", f"n={cfg.n}", f"{cfg.lora_mode()}-LoRA",
             *variant(cfg.align)]
    return " ".join(parts + (["+drift log"] if cfg.drift_every > 0 else []) + [f"seed={cfg.seed}"])


def table1(P: Profile, labels: Sequence[str] | None = None) -> list[FinetuneConfig]:
    """Every method at every harmful ratio (Table 1 / Fig. 2), every seed: ``sweeps.method_ps`` where it names the
    method, else ``sweeps.ps`` (SFT, Vaccine, or every method when ``baseline_ps`` is empty) or ``baseline_ps``."""
    s = P.sweeps
    return [finetune_config(P, d, p=p, seed=sd) for sd in P.seeds for d in (labels or s.defenses)
            for p in s.method_ps.get(d) or (s.ps if d in ALWAYS_SWEPT or not s.baseline_ps else s.baseline_ps)]


def fig3(P: Profile) -> list[FinetuneConfig]:
    return [finetune_config(P, d, seed=s, track_drift=True) for s in P.seeds for d in ("SFT", "Vaccine")]


def fig4(P: Profile) -> list[FinetuneConfig]:
    return [finetune_config(P, d, seed=P.seed) for d in ("SFT", "Vaccine")]


def aligned(P: Profile) -> list[AlignConfig]:
    """The base model and the SFT- / Vaccine-aligned models before any user fine-tuning (notebook 02)."""
    seeds = [P.seed] if P.shared_alignment else P.seeds
    return [align_config(P, m, seed=s) for s in seeds for m in ("none", "sft", "vaccine")]


@dataclass(frozen=True)
class Experiment:
    """One paper table / figure: its notebook, stages and outputs."""

    name: str
    notebook: str
    title: str
    finetunes: Callable[[Profile], list[FinetuneConfig]] = lambda P: []
    aligns: Callable[[Profile], list[AlignConfig]] = lambda P: []
    with_drift: bool = False  # also measure drift (and alignment loss) of every fine-tuned model
    tables: dict = field(default_factory=dict)  # table stem -> columns it must have
    figures: tuple = ()


_ROW = ["defense", "p", "n", "seed", "hs", "fa"]
EXPERIMENTS = {e.name: e for e in (
    Experiment("fig2", "01", "Fig. 2: HS, drift and alignment loss vs harmful ratio",
               lambda P: table1(P, [d for d in ("NA", "SFT") if d in P.sweeps.defenses] or ["SFT"]), with_drift=True,
               tables={"fig2_harmful_drift": ["defense", "p", "seed", "hs", "fa", "align_loss", "drift", "drift_sum_sq"],
                       "fig2_trend": ["defense", "hs", "align_loss", "drift"]},
               figures=("fig2_harmful_drift",)),
    Experiment("aligned", "02", "Aligned models before fine-tuning; alignment curves", aligns=aligned,
               tables={"aligned_models": ["model", "method", "seed", "hs", "refusal", "fa", "align_loss",
                                          "train_seconds"],
                       "alignment_curves": ["model", "step", "key", "value"]},
               figures=("aligned_models", "alignment_curves")),
    Experiment("table1", "03", "Table 1: methods over harmful ratios", table1,
               tables={"table1_defenses": _ROW}, figures=("table1_hs_fa_vs_p",)),
    Experiment("table2", "03", "Table 2: fine-tuning sample counts",
               lambda P: [finetune_config(P, d, p=P.sweeps.p_samples, n=n, seed=sd) for sd in P.seeds
                          for d in P.sweeps.sample_defenses for n in P.sweeps.sample_counts],
               tables={"table2_sample_counts": _ROW}, figures=("table2_sample_counts",)),
    Experiment("table4", "03", "Table 4: tasks",
               lambda P: [finetune_config(P, d, task=t, seed=s) for s in P.seeds for d in P.sweeps.defenses
                          for t in P.sweeps.tasks],
               tables={"table4_tasks": ["defense", "task", "seed", "hs", "fa"]}, figures=("table4_tasks",)),
    Experiment("table1_vs_paper", "04", "Table 1 beside the paper's numbers", table1,
               tables={"table1_vs_paper": ["defense"]}),
    Experiment("fig3", "04", "Fig. 3: drift and alignment loss during fine-tuning", fig3,
               tables={"fig3_drift_during_finetuning": ["defense", "seed", "step", "drift", "align_loss"]},
               figures=("fig3_drift_during_finetuning",)),
    Experiment("fig4", "04", "Fig. 4: t-SNE of alignment embeddings", fig4,
               aligns=lambda P: [align_config(P, m) for m in ("sft", "vaccine")],
               tables={"fig4_tsne": ["model", "x", "y"]}, figures=("fig4_tsne",)),
    Experiment("table6", "04", "Table 6: perturbation intensity rho",  # SFT is the rho = 0 reference
               lambda P: [finetune_config(P, "SFT", seed=s) for s in P.seeds]
               + [finetune_config(P, "Vaccine", rho=r, seed=s) for s in P.seeds for r in P.sweeps.rhos],
               tables={"table6_rho": ["defense", "rho", "seed", "hs", "fa"]}, figures=("table6_rho",)),
    Experiment("table7", "04", "Table 7: gradient vs Gaussian perturbation",
               lambda P: [finetune_config(P, "Vaccine", perturbation=k, seed=s) for s in P.seeds
                          for k in P.sweeps.perturbations],
               tables={"table7_perturbation": ["perturbation", "rho", "seed", "hs", "fa"]}),
    Experiment("table8", "04", "Table 8: Double- vs Single-LoRA",
               lambda P: [finetune_config(P, d, lora=m, seed=s) for s in P.seeds for d in P.sweeps.lora_defenses
                          for m in P.sweeps.lora_modes],
               tables={"table8_lora": ["defense", "lora", "seed", "hs", "fa"]}),
    Experiment("judge", "04", "Validation of the Harmful Score judge",
               tables={"judge_validation": ["judge", "accuracy", "auc", "n_test"]}),
    Experiment("table5", "05", "Tables 5 / 10: step time and memory",
               tables={"table5_overhead": ["method", "step_s", "peak_memory_gb", "slowdown"]},
               figures=("table5_overhead",)),
    Experiment("claims", "06", "Every claim's effect, 95 % CI and verdict under both judges; R1-R3 on the run",
               table1, aligns=aligned,
               tables={"claims": ["claim", "judge", "effect", "ci_lo", "ci_hi", "verdict"],
                       "regime_criteria_run": ["R1", "R2", "R3"]},
               figures=("claims_hs_effects",)),
)}


def get(name: str) -> Experiment:
    check_choice("experiment", name, EXPERIMENTS)
    return EXPERIMENTS[name]


def for_notebook(notebook: str) -> list[Experiment]:
    return [e for e in EXPERIMENTS.values() if e.notebook == notebook[:2]]


def parse_notebooks(text: str | None) -> list[str]:
    """``"3,01"`` -> ``["01", "03"]``; None / empty -> every notebook."""
    if not text:
        return list(NOTEBOOKS)
    wanted = [w.strip().zfill(2)[:2] for w in str(text).split(",") if w.strip()]
    bad = [w for w in wanted if w not in NOTEBOOKS]
    if bad or not wanted:
        raise ConfigError(f"unknown notebook(s) {', '.join(bad) or repr(text)}; allowed values: {', '.join(NOTEBOOKS)}")
    return [nb for nb in NOTEBOOKS if nb in wanted]


def artifacts() -> dict:
    """``{notebook stem: {"figures": [...], "tables": {stem: columns}}}``: what a default run writes."""
    out = {stem: {"figures": [], "tables": {}} for stem in NOTEBOOKS.values()}
    for e in EXPERIMENTS.values():
        out[NOTEBOOKS[e.notebook]]["figures"] += list(e.figures)
        out[NOTEBOOKS[e.notebook]]["tables"].update(e.tables)
    return out


@dataclass
class Stage:
    """One stage of a plan: what it is, its key and folder, whether it is cached."""

    kind: str  # align | finetune | eval | drift
    cfg: object
    key: str
    label: str
    cached: bool
    tasks: tuple = ()

    def path(self, run_dir) -> Path:  # the one stage-path rule
        return stage_dir(run_dir, self.kind, self.cfg if self.kind in ("align", "finetune") else self.key)


def _entry_stages(P: Profile, exp: Experiment):
    """``(kind, cfg, key, label, tasks)`` of every stage entry ``exp`` needs, with repeats (each kind in order)."""
    aligns, finetunes, tasks = exp.aligns(P), exp.finetunes(P), (P.finetune.task,)
    for a in [*aligns, *(f.align for f in finetunes)]:
        if a.method != "none":
            yield "align", a, align_key(a), " ".join([f"{method_label(a)} seed={a.seed}", *variant(a)]), ()
    for a in aligns if exp.name == "aligned" else ():
        yield "eval", a, eval_key(a, P.eval, tasks), f"{method_label(a)}-aligned model seed={a.seed}", tasks
    for f in finetunes:
        yield "finetune", f, finetune_key(f), label_of(f), ()
        yield "eval", f, eval_key(f, P.eval, (f.task,)), label_of(f), (f.task,)
        if exp.with_drift:
            yield "drift", f, drift_key(f, P.drift.n_samples), label_of(f), ()


def plan(P: Profile, notebooks: Sequence[str] | None = None, run_dir=None, kinds=KINDS,
         entries: Sequence[str] | None = None) -> list[Stage]:
    """Every distinct stage the notebooks (or the registry ``entries``) need, in dependency order
    (alignments, fine-tunes, evaluations, drift), each with its cache status under ``run_dir``."""
    run_dir = Path(run_dir or P.run_dir())
    exps = [get(e) for e in entries] if entries else [e for nb in notebooks or NOTEBOOKS for e in for_notebook(nb)]
    found: dict[tuple, Stage] = {}
    for exp in exps:
        for kind, cfg, key, label, tasks in _entry_stages(P, exp):
            if kind in kinds and (kind, key) not in found:
                s = Stage(kind, cfg, key, label, False, tasks)
                s.cached = is_done(s.path(run_dir))
                found[(kind, key)] = s
    return sorted(found.values(), key=lambda s: KINDS.index(s.kind))


def format_plan(stages: Sequence[Stage]) -> str:
    counts = {k: sum(s.kind == k for s in stages) for k in KINDS}
    n_cached = sum(s.cached for s in stages)
    lines = [f"plan: {' + '.join(f'{counts[k]} {KIND_NAMES[k]}' for k in KINDS)} stages; {n_cached} cached, "
             f"{len(stages) - n_cached} to run"]
    width = max((len(s.label) for s in stages), default=0)
    for s in stages:
        lines.append(f"  {s.kind:<8}  {'cached' if s.cached else 'run   ':<6}  {s.label:<{width}}  {s.key}")
    return "\n".join(lines)


def describe_plan(P: Profile, run_dir, name: str) -> str:
    """The design of registry entry ``name`` as its notebook shows it before the results: the grid
    (per method: p x n x task x variant x seeds) and every stage with its key, cached or to run."""
    exp = get(name)
    points = [(method_label(f), (f"{f.p:g}", str(f.n), f.task, " ".join([f"{f.lora_mode()}-LoRA", *variant(f.align)]),
                                 str(f.seed), finetune_key(f))) for f in exp.finetunes(P)]
    points += [("base model" if a.method == "none" else f"{method_label(a)}-aligned",
                (None, None, None, " ".join(variant(a)) or "no variant", str(a.seed), align_key(a)))
               for a in exp.aligns(P)]
    axes: dict[str, list[set]] = {}  # label -> the values of p, n, task, variant, seed, key
    for label, values in points:
        for ax, v in zip(axes.setdefault(label, [set() for _ in values]), values):
            ax.add(v)
    lines = [f"{name}: {exp.title}"]
    for label, ax in axes.items():
        grid = [f"{k} {{{', '.join(sorted(v, key=lambda x: (len(x), x)))}}}".strip()
                for k, v in zip(("p", "n", "task", "", "seeds"), ax) if None not in v]
        lines.append(f"  {label}: {' x '.join(grid)} = {len(ax[5])} model(s)")
    lines.append(format_plan(plan(P, run_dir=run_dir, entries=[name])) if axes else "  (no cached stage: measured "
                 "in the notebook itself)")
    return "\n".join(lines)


def check_pools(P: Profile, notebooks: Sequence[str] | None = None) -> None:
    """Before any stage runs: the offline splits are valid (``data.check_splits``; Hub splits are checked as each
    is loaded) and every sample count of the notebooks' stages fits them (ConfigError naming the profile parameter)."""
    src = P.data_source
    if src == "offline":
        check_splits()
    check_sizes(n_align=P.align.n, helpful_fraction=P.align.helpful_fraction, n_harmful=P.eval.n_harmful,
                seeds=P.seeds, source=src, names={"n_align": "align.n", "helpful_fraction": "align.helpful_fraction",
                                                   "n_harmful": "eval.n_harmful", "seed": "seeds"})
    points = {(f.task, f.n, f.p, f.defense): f for nb in (notebooks or NOTEBOOKS) for e in for_notebook(nb)
              for f in e.finetunes(P)}  # each distinct data request once
    for f in points.values():
        where = "sweeps.tasks / finetune.task" if f.task != P.finetune.task else "finetune.task"
        check_sizes(task=f.task, n=f.n, p=f.p, n_task=P.eval.n_task, source=src,
                    names={"task": where, "n": f"finetune.n (or sweeps.sample_counts; n={f.n}, p={f.p:g})",
                           "p": "finetune.p / sweeps.ps", "n_task": "eval.n_task"})
        if f.defense == "vlguard":
            check_sizes(n_align=f.vlguard_m, source=src, names={"n_align": "finetune.vlguard_m"})
