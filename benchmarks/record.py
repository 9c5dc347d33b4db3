"""Committed benchmark results (``figures/tables/bench.jsonl``, one JSON object per benchmark, with
provenance) and the README block generated from them."""

import json
from pathlib import Path

from vaccine_lib import readme as RM
from vaccine_lib.atomic import atomic_write_text
from vaccine_lib.paths import REPO_ROOT
from vaccine_lib.provenance import provenance

DEFAULT_FILE = REPO_ROOT / "figures" / "tables" / "bench.jsonl"


def read(path=DEFAULT_FILE) -> dict[str, dict]:
    """``{bench name: result}`` of the file (empty when there is none)."""
    path = Path(path)
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["bench"]: r for r in rows}


def write(results: list[dict], path=DEFAULT_FILE) -> Path:
    """Add (or replace, by name) each result, stamped with provenance (commit, libraries, hardware, date)."""
    rows = read(path)
    for r in results:
        rows[r["bench"]] = {**r, "provenance": provenance()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(rows[k], sort_keys=True) + "\n" for k in sorted(rows)))
    return path


def _origin(r: dict) -> str:
    prov = r.get("provenance", {})
    hw = prov.get("hardware", {})
    bits = [str(prov.get("created", ""))[:10], f"commit {str(prov.get('commit') or '')[:10]}" if prov.get("commit") else "",
            f"{hw.get('cpu_count')} CPU cores" if hw.get("cpu_count") else "", f"{r.get('threads')} torch threads"
            if r.get("threads") else "", "quick" if r.get("quick") else ""]
    return ", ".join(b for b in bits if b)


def _cells(r: dict) -> tuple:
    if r["bench"] == "step_overhead":
        t = r.get("targets", {})
        result = (f"Vaccine / SFT step time **{r['time_ratio_tau1']:.2f}x** at tau = 1 ({r['vaccine_tau1_step_s']:.2f} vs "
                  f"{r['sft_step_s']:.2f} s), **{r['time_ratio_tau10']:.2f}x** at tau = 10; peak memory "
                  f"**{r['memory_ratio']:.3f}x** ({r.get('memory_method', '')})")
        target = (f"<= {t.get('time_ratio_tau1')}x, <= {t.get('time_ratio_tau10')}x, <= {t.get('memory_ratio')}x"
                  if t else "")
    elif r["bench"] == "generation":
        result = (f"batched (batch {r.get('batch_size')}) **{r['speedup']:.2f}x** faster than one prompt at a time "
                  f"({r['seconds_batched']:.1f} vs {r['seconds_one_at_a_time']:.1f} s, {r['n_prompts']} prompts x "
                  f"{r['max_new_tokens']} new tokens); identical answers {100 * r['identical_fraction']:.0f} %")
        target = ">= 5x, >= 95 %"
    elif r["bench"] == "speed":
        result = (f"SFT step with autocast={r['autocast_resolved']} + answer-only head **{r['speedup_project_vs_plain']:.2f}x** "
                  f"faster than plain fp32 ({r['project_step_s']:.2f} vs {r['plain_step_s']:.2f} s; bf16 alone "
                  f"{r['bf16_step_s']:.2f} s, answer-only alone {r['answer_only_step_s']:.2f} s); plain step at "
                  f"{100 * r['efficiency_plain_fp32']:.0f} % of the fp32 matmul peak ({r['matmul_gflops_fp32']:.0f} "
                  f"GFLOP/s; bf16 {r['matmul_gflops_bf16']:.0f})")
        target = f">= {r['target_speedup']}x on a host with bf16 units"
    elif r["bench"] == "eval_cost":
        g = r["generation"]
        gens = ", ".join(f"{k.replace('_b', ' batch ')} {v['s_per_prompt']:.3f} s (identical {100 * v['identical_to_fp32']:.0f} %)"
                         for k, v in g.items())
        judges = ", ".join(f"{k} {v['s_per_prompt']:.3f} s" for k, v in r["judges"].items())
        result = (f"**{r['s_per_prompt_profile']:.3f} s** per harmful prompt as the default profile evaluates "
                  f"({r['profile_setting']}, {r['max_new_tokens']} new tokens, judges included); best "
                  f"{r['best_setting']} {r['s_per_prompt_best']:.3f} s. Generation per prompt: {gens}; judges: {judges}")
        target = f"<= {r['target_s_per_prompt']} s per prompt"
    elif r["bench"] == "cost_model":
        judges = ", ".join(f"{k[6:-13]} {v * 1000:.2f} ms" for k, v in r.items() if k.startswith("judge_"))
        result = (f"fine-tuning step ({r['train_autocast']}, batch {r['batch']} x {r['seq']}, full-vocabulary loss) "
                  f"**{r['train_step_s']:.2f} s**: forward {r['train_forward_s']:.2f}, backward {r['train_backward_s']:.2f}, "
                  f"optimizer {r['train_optimizer_s']:.3f}; drift-log forward {r['drift_log_forward_s']:.2f} s; generation "
                  f"({r['eval_autocast']}, batch {r['generation_batch']}) **{r['generation_s_per_prompt']:.3f} s** per "
                  f"prompt: prefill {r['prefill_s_per_prompt']:.3f} s, decoding {1000 * r['decode_s_per_token_per_prompt']:.2f} "
                  f"ms per token; judges per prompt: {judges}; load model {r['load_model_s']:.2f} s, merge LoRA "
                  f"{r['merge_lora_s']:.2f} s, save adapter {r['save_adapter_s']:.3f} s, worker imports {r['worker_import_s']:.1f} s")
        target = "(where the time goes)"
    else:
        result, target = json.dumps({k: v for k, v in r.items() if k != "provenance"}), ""
    return f"`{r['bench']}`", r.get("model", ""), result, target, _origin(r)


def render_block(rows: dict[str, dict]) -> str:
    body = (RM.md_table(["benchmark", "model", "result", "target", "measured"], [_cells(rows[k]) for k in sorted(rows)])
            if rows else "No benchmark has been recorded yet: run `make bench`.")
    return RM.render("bench", "Generated by `make bench` from `figures/tables/bench.jsonl`; do not edit by hand.", body)


def render_readme(readme=RM.README, path=DEFAULT_FILE) -> bool:
    return RM.replace(readme, "bench", render_block(read(path)))


def readme_matches(readme=RM.README, path=DEFAULT_FILE) -> bool:
    return RM.block(readme, "bench") == render_block(read(path))
