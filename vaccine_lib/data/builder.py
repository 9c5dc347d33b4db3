"""Build the processed splits (``python -m vaccine_lib.data build``).

Writes ``<data_dir>/processed/<split>.jsonl`` and, last, ``manifest.json`` with each source's
package and version (and the sha256 of every source file read), row counts, the sha256 of every
split file and the build parameters. No timestamps: building twice gives identical bytes.
A split counts as built only if the manifest lists it with the sha256 of the file on disk, so an
interrupted build (a ``.tmp-*`` file left behind, or no manifest yet) is never taken as complete.

Disjointness (after ``normalize_question``): evaluation prompts are kept pure; harmful
fine-tuning questions that appear in the evaluation set are dropped; alignment questions that
appear in either are dropped.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import DataFormatError
from ..packages import package_version
from . import sources
from .jsonl import TMP_PREFIX, atomic_write_bytes, dumps_rows, read_jsonl, sha256_bytes, sha256_file
from .refusals import compose_refusal
from .templates import normalize_question

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
#: bump when the build logic changes what it writes (an older build is then rebuilt on demand)
BUILDER_VERSION = 3

COMMON_FIELDS = {"instruction": str, "input": str, "output": str, "kind": str, "source": str, "category": str}

#: split -> (extra required fields, allowed kinds)
SPLIT_SCHEMA = {
    "alignment": ({}, ("refusal", "helpful")),
    "harmful_ft": ({}, ("harmful",)),
    "harmful_eval": ({}, ("harmful",)),
    "sst2_train": ({}, ("benign",)),
    "sst2_test": ({}, ("benign",)),
    "gsm8k_train": ({"answer": str}, ("benign",)),
    "gsm8k_test": ({"answer": str}, ("benign",)),
}
SPLITS = tuple(SPLIT_SCHEMA)


@dataclass(frozen=True)
class BuildConfig:
    """Build parameters (recorded in the manifest)."""

    seed: int = 0
    harmful_words: int = 60  # harmful fine-tuning answers cut to this many words
    advbench_eval: int = 187  # held-out AdvBench prompts for evaluation (313 StrongREJECT + 187 = 500)
    helpful_pool: int = 1000  # benign helpful pairs in the alignment pool
    pyrit_refusal_fraction: float = 0.15  # share of refusals taken from pyrit's real refusals
    sst2_train_per_label: int = 2000
    sst2_test_per_label: int = 250
    gsm8k_train: int = 1000
    gsm8k_test: int = 500
    gsm8k_train_seed: int = 1
    gsm8k_test_seed: int = 2


def processed_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "processed"


def split_path(data_dir: Path, name: str) -> Path:
    return processed_dir(data_dir) / f"{name}.jsonl"


def _dedupe(rows: list[dict], exclude: set[str] = frozenset()) -> list[dict]:
    seen, out = set(exclude), []
    for r in rows:
        key = normalize_question(r["instruction"] + ("\n" + r["input"] if r["input"] else ""))
        if key and key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _keys(rows: list[dict]) -> set[str]:
    return {normalize_question(r["instruction"]) for r in rows}


def make_splits(cfg: BuildConfig = BuildConfig()) -> dict[str, list[dict]]:
    """All processed splits as lists of rows (pure function of ``cfg`` and the installed packages)."""
    rng = random.Random(cfg.seed)

    # --- harmful evaluation: all StrongREJECT + held-out AdvBench
    strong = _dedupe(sources.strongreject())
    adv = _dedupe(sources.advbench(), exclude=_keys(strong))  # AdvBench prompts not already in StrongREJECT
    order = list(range(len(adv)))
    rng.shuffle(order)
    adv_eval = [adv[i] for i in sorted(order[: cfg.advbench_eval])]
    adv_train = [adv[i] for i in sorted(order[cfg.advbench_eval:])]
    harmful_eval = strong + adv_eval
    eval_keys = _keys(harmful_eval)

    # --- harmful fine-tuning pairs (never an evaluation question)
    harmful_ft = _dedupe(sources.many_shot_harmful(cfg.harmful_words), exclude=eval_keys)
    ft_keys = _keys(harmful_ft)

    # --- alignment: refusals to harmful questions + helpful answers to benign instructions
    extra = tuple(sources.pyrit_refusals()) if cfg.pyrit_refusal_fraction > 0 else ()
    questions = _dedupe(sources.donotanswer() + adv_train, exclude=eval_keys | ft_keys)
    refusals = [dict(r, output=compose_refusal(r["instruction"], r["category"], cfg.seed, extra,
                                               cfg.pyrit_refusal_fraction), kind="refusal") for r in questions]
    helpful = _dedupe(sources.helpful_pairs(cfg.helpful_pool, cfg.seed),
                      exclude=eval_keys | ft_keys | _keys(refusals))[: cfg.helpful_pool]
    alignment = refusals + helpful

    # --- SST2-like sentiment (Rotten Tomatoes): balanced, disjoint train/test
    rt = sources.rotten_tomatoes()
    labels_by_text: dict[str, set] = {}
    for r in rt:
        labels_by_text.setdefault(normalize_question(r["input"]), set()).add(r["output"])
    rt = [r for r in rt if len(labels_by_text[normalize_question(r["input"])]) == 1]  # drop conflicting texts
    seen, uniq = set(), []
    for r in rt:
        k = normalize_question(r["input"])
        if k not in seen:
            seen.add(k)
            uniq.append(r)
    rng_rt = random.Random(cfg.seed + 101)
    sst2_train, sst2_test = [], []
    for label in ("negative", "positive"):
        pool = [r for r in uniq if r["output"] == label]
        rng_rt.shuffle(pool)
        need = cfg.sst2_test_per_label + cfg.sst2_train_per_label
        if len(pool) < need:
            raise DataFormatError(f"Rotten Tomatoes has only {len(pool)} {label} snippets; need {need}")
        sst2_test += pool[: cfg.sst2_test_per_label]
        sst2_train += pool[cfg.sst2_test_per_label: need]
    rng_rt.shuffle(sst2_train)
    rng_rt.shuffle(sst2_test)

    # --- GSM8K-like math (GSM-Symbolic): test and train from different seeds, disjoint questions
    gsm_test = _dedupe(sources.gsm_symbolic(cfg.gsm8k_test + 50, cfg.gsm8k_test_seed))[: cfg.gsm8k_test]
    gsm_train = _dedupe(sources.gsm_symbolic(cfg.gsm8k_train + 100, cfg.gsm8k_train_seed),
                        exclude=_keys(gsm_test))[: cfg.gsm8k_train]

    return {
        "alignment": alignment,
        "harmful_ft": harmful_ft,
        "harmful_eval": harmful_eval,
        "sst2_train": sst2_train,
        "sst2_test": sst2_test,
        "gsm8k_train": gsm_train,
        "gsm8k_test": gsm_test,
    }


def read_manifest(data_dir: Path) -> dict | None:
    path = processed_dir(data_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("version") == MANIFEST_VERSION else None


def is_built(data_dir: Path, name: str | None = None, manifest: dict | None = None) -> bool:
    """True when the manifest lists the split(s) and the file on disk has the listed sha256."""
    manifest = manifest or read_manifest(data_dir)
    if not manifest:
        return False
    for split in [name] if name else SPLITS:
        entry = manifest.get("splits", {}).get(split)
        path = split_path(data_dir, split)
        if not entry or not path.is_file() or sha256_file(path) != entry.get("sha256"):
            return False
    return True


def build(data_dir: Path, force: bool = False, config: BuildConfig = BuildConfig(), verbose: bool = False) -> dict:
    """Build every split into ``<data_dir>/processed`` (no-op when already built, unless ``force``)."""
    data_dir = Path(data_dir)
    out = processed_dir(data_dir)
    if not force and is_built(data_dir):
        manifest = read_manifest(data_dir)
        if manifest.get("params") == asdict(config) and manifest.get("builder") == BUILDER_VERSION:
            return manifest
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{TMP_PREFIX}*"):  # left by an interrupted build
        stale.unlink(missing_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # invalidate first: a half-written build is never "built"
    sources.SOURCE_FILES.clear()
    splits = make_splits(config)
    entries = {}
    for name, rows in splits.items():
        data = dumps_rows(rows)
        atomic_write_bytes(split_path(data_dir, name), data)
        kinds: dict[str, int] = {}
        for r in rows:
            kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
        entries[name] = {"file": f"{name}.jsonl", "rows": len(rows), "kinds": dict(sorted(kinds.items())),
                         "sha256": sha256_bytes(data)}
    from .sources import SOURCE_FILES

    src = {}
    for dist in sorted(SOURCE_FILES):
        files = {}
        for rel in sorted(SOURCE_FILES[dist]):
            path = sources.package_file(dist, rel)
            if path.is_file():
                files[rel] = sha256_file(path)
        src[dist] = {"version": package_version(dist), "files": files}
    manifest = {"version": MANIFEST_VERSION, "builder": BUILDER_VERSION, "params": asdict(config), "sources": src, "splits": entries}
    atomic_write_bytes(out / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    if verbose:
        print(f"built {len(entries)} splits in {out} ({time.perf_counter() - t0:.1f} s)")
        for name, e in entries.items():
            print(f"  {name:14s} {e['rows']:6d} rows  {e['kinds']}")
    return manifest


def read_split_rows(data_dir: Path, name: str) -> list[dict]:
    """Validated rows of one built split file."""
    extra, kinds = SPLIT_SCHEMA[name]
    return read_jsonl(split_path(data_dir, name), {**COMMON_FIELDS, **extra}, {"kind": kinds})
