"""The overhead measurement notebook 05 runs (``step_overhead``); ``make bench`` is the top-level ``benchmarks``."""
