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
