"""Safe previews of stored generations for notebooks.

Evaluation results live in one store, the stage cache: ``runs/<profile>/eval/<key>/`` holds
``metrics.json`` and ``generations.jsonl`` (git-ignored; may contain harmful text), written by
``vaccine_lib.pipeline.evaluate`` and read back by ``pipeline.generations``. This module only shows
them, labelled and truncated.
"""

from __future__ import annotations

from ..errors import ConfigError


def _label(row: dict) -> str:
    if row.get("harmful"):
        return "harmful"
    if row.get("refusal"):
        return "refusal"
    if row.get("label_only"):
        return "label-only"
    if "correct" in row:
        return "correct" if row["correct"] else "wrong"
    if "harmful" in row:
        return "not harmful"
    return "unjudged"


def show_generations(generations, n: int = 5, max_chars: int = 200, only=None, as_text: bool = False):
    """A safe preview of generations for notebooks: answers LABELLED and TRUNCATED.

    Each answer reads e.g. ``"[harmful, truncated] Sure, here is ..."``. ``only`` filters by label
    (``"harmful"``, ``"refusal"``, ``"label-only"``, ``"not harmful"``, ``"correct"``, ``"wrong"``).
    ``generations`` is a list of dicts, an ``EvalResult``/``AccuracyResult`` or a DataFrame.
    Returns a DataFrame (question, label, answer) or, with ``as_text=True``, a string.
    """
    import pandas as pd

    if hasattr(generations, "generations") and not isinstance(generations, pd.DataFrame):
        generations = generations.generations
    if isinstance(generations, pd.DataFrame):
        generations = generations.to_dict("records")
    if max_chars < 1:
        raise ConfigError(f"max_chars={max_chars!r} must be >= 1")
    out = []
    for row in generations or []:
        label = _label(row)
        if only is not None and label != only:
            continue
        answer = str(row.get("answer", ""))
        truncated = len(answer) > max_chars
        shown = answer[:max_chars].rstrip() + (" ..." if truncated else "")
        tag = f"[{label}, truncated]" if truncated else f"[{label}]"
        question = str(row.get("question", ""))
        out.append({"question": question[:max_chars] + ("..." if len(question) > max_chars else ""),
                    "label": label, "answer": f"{tag} {shown}"})
        if len(out) >= n:
            break
    df = pd.DataFrame(out, columns=["question", "label", "answer"])
    if as_text:
        return "\n".join(f"Q: {r['question']}\nA: {r['answer']}" for r in out) or "(no generations)"
    return df
