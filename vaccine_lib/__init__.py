"""vaccine_lib: reference reproduction of Vaccine (Huang, Hu, Liu, NeurIPS 2024).

Perturbation-aware alignment for large language models against harmful fine-tuning.
Modules (one job each):

- ``packages``   locate files inside the offline data/model packages (never imported)
- ``models``     model registry: embedded SmolLM2, Gemma-3, tiny random test models, Hub ids
- ``data``       sources, Alpaca template, tokenisation, fine-tuning mixes, ``python -m vaccine_lib.data build``
- ``judge``      Harmful Score moderation: keyword / trained classifier / BeaverDam
- ``vaccine``    ``VaccineConfig`` and ``VaccineTrainer`` (the method)
- ``baselines``  EWC, KL, Vlguard fine-tuning defenses
- ``guards``     divergence guard: ``FiniteGuard`` (Trainer callback), ``check_finite_weights``
- ``lora``       Double-/Single-LoRA helpers
- ``drift``      harmful embedding drift, hidden embeddings, ``DriftCallback``
- ``evaluation`` batched generation, Harmful Score, fine-tune accuracy, results store
- ``pipeline``   cached ``align`` / ``finetune`` / ``evaluate`` stages
- ``profiles``   smoke / default / full / paper experiment profiles
- ``plotting``   one seaborn theme, ``save_fig``
"""

__version__ = "0.1.0"
