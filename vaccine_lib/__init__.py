"""vaccine_lib: reference reproduction of Vaccine (Huang, Hu, Liu, NeurIPS 2024).

Perturbation-aware alignment for large language models against harmful fine-tuning. The modules, their layers
and the one-way flow of imports: ``docs/ARCHITECTURE.md``. Top-level shortcuts (imported on first use, so
``import vaccine_lib`` stays light): ``VaccineConfig``, ``VaccineTrainer``, ``load_model`` and the stages
``align``, ``finetune``, ``evaluate``, ``drift_stage`` (``vaccine_lib.stages.drift``; ``vaccine_lib.drift`` is
the module)."""

from importlib import import_module

__version__ = "0.1.0"

#: exported name -> (module, attribute), imported on first access
_EXPORTS = {
    "VaccineConfig": ("vaccine", "VaccineConfig"),
    "VaccineTrainer": ("vaccine", "VaccineTrainer"),
    "load_model": ("models", "load_model"),
    "align": ("stages", "align"),
    "finetune": ("stages", "finetune"),
    "evaluate": ("stages", "evaluate"),
    "drift_stage": ("stages", "drift"),
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vaccine_lib' has no attribute {name!r}; top-level names: {', '.join(__all__)}")
    module, attr = _EXPORTS[name]
    value = getattr(import_module(f".{module}", __name__), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
