"""vaccine_lib: reference reproduction of Vaccine (Huang, Hu, Liu, NeurIPS 2024), perturbation-aware alignment
against harmful fine-tuning; its layout: ``docs/ARCHITECTURE.md``. Top-level names are imported on first use
(``drift_stage`` is ``stages.drift``; ``vaccine_lib.drift`` is the module)."""

from importlib import import_module

__version__ = "0.1.0"

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
