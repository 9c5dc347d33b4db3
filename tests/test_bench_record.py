"""make bench's committed results (benchmarks.record) and the README block generated from them."""


def test_bench_record_round_trip_and_readme_block(tmp_path):
    from benchmarks import record

    path = tmp_path / "bench.jsonl"
    gen = {"bench": "generation", "model": "m", "speedup": 6.0, "seconds_batched": 1.0, "seconds_one_at_a_time": 6.0,
           "n_prompts": 16, "max_new_tokens": 32, "batch_size": 16, "identical_fraction": 1.0, "threads": 2}
    record.write([gen], path)
    record.write([{**gen, "speedup": 7.0}], path)  # replaced by name, not appended
    rows = record.read(path)
    assert list(rows) == ["generation"] and rows["generation"]["speedup"] == 7.0
    assert "commit" in rows["generation"]["provenance"]
    readme = tmp_path / "README.md"
    begin, end = record.RM.markers("bench")
    readme.write_text(f"a\n{begin}\n{end}\nb\n")
    assert record.render_readme(readme, path) and record.readme_matches(readme, path)
    assert "**7.00x**" in readme.read_text()


def test_committed_readme_bench_block_matches_committed_results():
    from benchmarks import record

    assert record.readme_matches(), "README benchmark block differs from figures/tables/bench.jsonl: run make bench"


def test_eval_cost_row_renders_the_cost_per_prompt_and_its_parts():
    from benchmarks import record

    r = {"bench": "eval_cost", "model": "m", "max_new_tokens": 32, "threads": 2, "target_s_per_prompt": 0.25,
         "generation": {"fp32_b16": {"s_per_prompt": 0.4, "identical_to_fp32": 1.0},
                        "bf16_b64": {"s_per_prompt": 0.2, "identical_to_fp32": 0.9}},
         "judges": {"classifier": {"s_per_prompt": 0.001}, "probe": {"s_per_prompt": 0.02}},
         "profile_setting": "fp32_b16", "s_per_prompt_profile": 0.421, "best_setting": "bf16_b64",
         "s_per_prompt_best": 0.221}
    cells = record._cells(r)
    assert "**0.421 s**" in cells[2] and "bf16 batch 64 0.200 s (identical 90 %)" in cells[2] and "0.25" in cells[3]


def test_cost_model_row_renders_where_the_time_goes():
    from benchmarks import record

    r = {"bench": "cost_model", "model": "m", "threads": 2, "train_autocast": "bf16", "eval_autocast": "fp32",
         "batch": 8, "seq": 128, "load_model_s": 0.8, "train_forward_s": 2.0, "train_backward_s": 1.8,
         "train_optimizer_s": 0.012, "train_step_s": 3.812, "drift_log_forward_s": 3.2, "save_adapter_s": 0.03,
         "merge_lora_s": 0.84, "generation_batch": 16, "prefill_s_per_prompt": 0.04,
         "decode_s_per_token_per_prompt": 0.0017, "generation_s_per_prompt": 0.093,
         "judge_classifier_s_per_prompt": 0.0004, "judge_probe_s_per_prompt": 0.017, "worker_import_s": 7.4}
    text = record._cells(r)[2]
    assert "**3.81 s**: forward 2.00, backward 1.80" in text and "decoding 1.70 ms per token" in text
    assert "classifier 0.40 ms, probe 17.00 ms" in text and "worker imports 7.4 s" in text
