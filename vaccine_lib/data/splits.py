"""Public data API: processed splits as ``datasets.Dataset``, alignment sets, fine-tuning mixes, and the instructions
of the self-distilled alignment half and of the benign refusal rate.

Self-distillation: the paper's alignment data (BeaverTails) keeps the model helpful. Offline, templated one-line
puzzle answers taught "puzzle -> answer, anything else -> refuse" (over-refusal; ``docs/regime.md``). The
self-distilled half answers benign instructions that look like the user traffic (SST2-format reviews, GSM-style
questions, puzzles) with the **base model's own greedy answers**, so alignment teaches refusal without new behaviour
on benign requests (``AlignConfig.helpful = "selfdistill"``; chosen by the regime study). The answers are a cached
stage (``stage_training.selfdistilled``); only the instructions are chosen here."""

import random

import datasets

from ..config import OFFLINE_TASKS, SOURCES, TASKS, AlignConfig, check_param
from ..errors import ConfigError, check_choice, check_int, check_range, check_seed
from . import builder as _build
from .builder import SPLITS, default_data_dir
from .sources import HUB_SPLITS, helpful_pairs, load_hub_split

_cache: dict[tuple, object] = {}
#: shares of the self-distilled instructions: SST2-format reviews, GSM-style questions (rest: puzzles)
SELFDISTILL_SHARES = (0.4, 0.3)
#: generated tokens per self-distilled answer (greedy)
SELFDISTILL_TOKENS = 48
#: extra instructions answered so that dropped refusals / empty answers still leave enough rows
SELFDISTILL_MARGIN = 0.25
#: the benign evaluation set per 100: 50 SST2-format reviews, 25 GSM-style questions (rest: puzzles, from a
#: puzzle seed no alignment set uses)
BENIGN_SHARES = (0.5, 0.25)
BENIGN_SEED, BENIGN_PUZZLE_SEED = 7, 977


def _manifest(root, names) -> dict:
    """The manifest of ``root``, built first when a split in ``names`` is missing or stale."""
    manifest = _build.read_manifest(root)
    return manifest if all(_build.is_built(root, name, manifest) for name in names) else _build.build(root)


def load_split(name: str, data_dir=None, source: str = "offline"):
    """A processed split as a ``datasets.Dataset`` (offline splits are built on demand if missing)."""
    check_choice("source", source, SOURCES)
    if source == "hub":
        check_choice("split", name, HUB_SPLITS)
        if ("hub", name) not in _cache:
            _cache["hub", name] = load_hub_split(name)
        return _cache["hub", name]
    if name not in SPLITS and name in HUB_SPLITS:
        raise ConfigError(f"split {name!r} exists only with source='hub'; offline splits: {', '.join(SPLITS)}")
    check_choice("split", name, SPLITS)
    root = default_data_dir(data_dir)
    key = (str(_build.split_path(root, name).resolve()), _manifest(root, [name])["splits"][name]["sha256"])
    if key not in _cache:
        _cache[key] = datasets.Dataset.from_list(_build.read_split_rows(root, name))
    return _cache[key]


def check_splits(names=None, data_dir=None) -> dict[str, int]:
    """``{split: rows}`` of the offline splits (default: all), built first if missing or stale, each file checked
    once by ``builder.verify_split`` (before any stage trains). Hub splits are checked as each is loaded."""
    names = list(SPLITS if names is None else [names] if isinstance(names, str) else names)
    for name in names:
        check_choice("split", name, SPLITS)
    root = default_data_dir(data_dir)
    manifest = _manifest(root, names)
    return {name: _build.verify_split(root, name, manifest) for name in names}


def _sample(ds, n: int, rng: random.Random, what: str, param: str = "n", fix: str | None = None) -> list[int]:
    """``n`` distinct row indices; ``param`` is the caller's parameter behind ``n`` (named in the error)."""
    check_int(param, n, 0)
    if n > len(ds):
        raise ConfigError(f"{param} asks for {n} {what} rows but the pool has only {len(ds)}; allowed range: "
                          f"[0, {len(ds)}]. Fix: {fix or f'lower {param} to at most {len(ds)}'}", param=param)
    return rng.sample(range(len(ds)), n)


def pool_size(name: str, data_dir=None, source: str = "offline") -> int:
    """Number of rows of a split (to validate sizes before any stage runs; builds the offline data if needed)."""
    return check_splits(name, data_dir)[name] if source == "offline" else len(load_split(name, data_dir, source))


def check_sizes(*, task: str | None = None, n: int | None = None, p: float | None = None,
                n_harmful: int | None = None, n_task: int | None = None, n_align: int | None = None,
                helpful_fraction: float | None = None, seeds=(), source: str = "offline", data_dir=None,
                names: dict | None = None) -> None:
    """Check the given data requests against the pools before any stage runs: the task exists for ``source``, the
    fine-tuning mix, evaluation items and alignment rows fit, every seed is valid. ``names`` maps these argument
    names to the caller's (``{"n": "finetune.n"}``) for the ConfigError."""
    def name(key):
        return (names or {}).get(key, key)

    def fits(key, want, split, what, extra=""):
        have = pool_size(split, data_dir, source)
        if want > have:
            raise ConfigError(f"{name(key)}{extra} asks for {want} {what} but the {split} pool has only {have}; "
                              f"allowed range: [0, {have}]. Lower {name(key)}", param=name(key))

    check_choice("source", source, SOURCES)
    for s in seeds:
        check_seed(name("seed"), s)
    if task is not None:
        _check_task(task, source, name("task"))
    if p is not None:
        check_param("p", p, name("p"))
    for key, value in (("n", n), ("n_harmful", n_harmful), ("n_task", n_task), ("n_align", n_align)):
        if value is not None:
            check_int(name(key), value, 1)
    offline_task = task is not None and source == "offline"
    if n is not None:
        n_harm = round(n * (p or 0.0))
        fits("n", n_harm, "harmful_ft", "harmful fine-tuning rows", f" (x p = {p})")
        if offline_task:
            fits("n", n - n_harm, f"{task}_train", "benign rows")
    if n_harmful is not None:
        fits("n_harmful", n_harmful, "harmful_eval", "harmful evaluation prompts")
    if n_task is not None and offline_task:
        fits("n_task", n_task, f"{task}_test", "task test items")
    if n_align is not None:
        fits("n_align", n_align, "alignment", "alignment rows")
        if source == "offline" and helpful_fraction is not None:
            check_range(name("helpful_fraction"), helpful_fraction, 0.0, 1.0)
            kinds = _build.read_manifest(default_data_dir(data_dir))["splits"]["alignment"]["kinds"]
            _check_kinds(n_align, helpful_fraction, kinds, name("n_align"), name("helpful_fraction"))


def _check_kinds(n: int, helpful_fraction: float, have: dict, n_name="n", hf_name="helpful_fraction") -> int:
    """``round(n * helpful_fraction)`` helpful rows and the rest refusals must fit ``have`` ({kind: rows})."""
    n_help = round(n * helpful_fraction)
    for kind, want in (("helpful", n_help), ("refusal", n - n_help)):
        if want > have.get(kind, 0):
            raise ConfigError(f"{n_name}={n} at {hf_name}={helpful_fraction} asks for {want} {kind} alignment rows "
                              f"but the pool has only {have.get(kind, 0)}; lower {n_name} or change {hf_name}",
                              param=n_name)
    return n_help


def alignment_set(n: int | None = None, seed: int = 0,
                  helpful_fraction: float = AlignConfig.model_fields["helpful_fraction"].default, data_dir=None,
                  source: str = "offline"):
    """``n`` (None: all) alignment pairs, round(n * helpful_fraction) helpful answers + refusals, shuffled with
    ``seed`` (``source="hub"``: BeaverTails safe answers, no ``helpful_fraction``)."""
    check_seed("seed", seed)
    if n is not None:
        check_int("n", n, 1)
    pool = load_split("alignment", data_dir, source)
    rng = random.Random(seed)
    if source == "hub":
        idx = list(range(len(pool))) if n is None else _sample(pool, n, rng, "alignment")
    else:
        check_range("helpful_fraction", helpful_fraction, 0.0, 1.0)
        kinds = pool["kind"]
        ref = [i for i, k in enumerate(kinds) if k == "refusal"]
        hel = [i for i, k in enumerate(kinds) if k == "helpful"]
        if n is None:
            idx = ref + hel
        else:
            n_help = _check_kinds(n, helpful_fraction, {"helpful": len(hel), "refusal": len(ref)})
            idx = rng.sample(hel, n_help) + rng.sample(ref, n - n_help)
    rng.shuffle(idx)
    return pool.select(idx)


def _check_task(task: str, source: str, param: str = "task") -> None:
    check_choice("source", source, SOURCES)
    if source == "offline" and task in TASKS and task not in OFFLINE_TASKS:
        raise ConfigError(f"{param} {task!r} has no offline data (it needs source='hub', i.e. the Hugging Face Hub); "
                          f"offline tasks: {', '.join(OFFLINE_TASKS)}", param=param)
    check_choice(param, task, TASKS if source == "hub" else OFFLINE_TASKS)


def finetune_mix(task: str, n: int, p: float, seed: int = 0, data_dir=None, source: str = "offline"):
    """The user's fine-tuning set: ``round(n*p)`` harmful pairs + ``n - round(n*p)`` benign task rows (``kind``
    harmful / benign), shuffled with ``seed``."""
    _check_task(task, source)
    check_param("p", p)
    check_int("n", n, 1)
    check_seed("seed", seed)
    harmful = load_split("harmful_ft", data_dir, source)
    benign = load_split(f"{task}_train", data_dir, source)
    rng = random.Random(seed)
    n_harm = round(n * p)
    h_idx = _sample(harmful, n_harm, rng, "harmful fine-tuning (harmful_ft)", "n (harmful rows = round(n * p))",
                    f"n={n}, p={p} need {n_harm} harmful rows; lower n or p so that round(n * p) <= {len(harmful)}")
    b_idx = _sample(benign, n - n_harm, rng, f"benign {task}_train", "n (benign rows = n - round(n * p))",
                    f"lower n so that n - round(n * p) <= {len(benign)}")
    fields = list(benign.column_names)
    rows = [{k: harmful[i].get(k, "") for k in fields} for i in h_idx] + [benign[i] for i in b_idx]
    rng.shuffle(rows)
    return datasets.Dataset.from_list(rows, features=benign.features)


def _subset(split: str, n: int | None, seed: int, data_dir, source: str, what: str):
    """All rows of ``split`` when ``n`` is None, else a seed-determined subset of ``n`` (file order)."""
    check_seed("seed", seed)
    if n is not None:
        check_int("n", n, 1)
    ds = load_split(split, data_dir, source)
    return ds if n is None else ds.select(sorted(_sample(ds, n, random.Random(seed), split, f"n ({what})")))


def eval_items(task: str, n: int | None = None, seed: int = 0, data_dir=None, source: str = "offline"):
    """Test items of a benign task: all when ``n`` is None, else a seed-determined subset of ``n`` (file order)."""
    _check_task(task, source)
    return _subset(f"{task}_test", n, seed, data_dir, source, "task test items")


def harmful_eval_prompts(n: int | None = None, seed: int = 0, data_dir=None, source: str = "offline"):
    """Unseen harmful prompts for the Harmful Score (offline: every StrongREJECT prompt + held-out AdvBench,
    disjoint from all training questions); all, or a seed-determined subset of ``n`` in file order."""
    return _subset("harmful_eval", n, seed, data_dir, source, "harmful evaluation prompts")


def selfdistill_prompts(n: int, seed: int, data_dir=None) -> list[dict]:
    """``n`` benign instructions for the self-distilled helpful half (train splits only)."""
    rng = random.Random(seed)
    sst, gsm = load_split("sst2_train", data_dir), load_split("gsm8k_train", data_dir)
    k_sst, k_gsm = round(SELFDISTILL_SHARES[0] * n), round(SELFDISTILL_SHARES[1] * n)
    rows = [sst[i] for i in rng.sample(range(len(sst)), k_sst)] + [gsm[i] for i in rng.sample(range(len(gsm)), k_gsm)]
    rows += helpful_pairs(n - k_sst - k_gsm, seed=seed + 5)[: n - k_sst - k_gsm]
    return [{"instruction": r["instruction"], "input": r.get("input") or "", "kind": "helpful",
             "source": "selfdistill", "category": r.get("category", ""), "output": ""} for r in rows]


def benign_eval_rows(n: int = 100, data_dir=None) -> list[dict]:
    """``n`` held-out benign instructions (test splits), each with its ``family`` (sst2 / gsm8k / puzzle): the
    prompts of the benign refusal rate."""
    k_sst, k_gsm = round(BENIGN_SHARES[0] * n), round(BENIGN_SHARES[1] * n)
    k_puz = n - k_sst - k_gsm
    sst = list(eval_items("sst2", k_sst, seed=BENIGN_SEED, data_dir=data_dir)) if k_sst else []
    gsm = list(eval_items("gsm8k", k_gsm, seed=BENIGN_SEED, data_dir=data_dir)) if k_gsm else []
    puz = helpful_pairs(k_puz, seed=BENIGN_PUZZLE_SEED)[:k_puz] if k_puz else []
    return [dict(r, family=fam) for fam, rows in (("sst2", sst), ("gsm8k", gsm), ("puzzle", puz)) for r in rows]
