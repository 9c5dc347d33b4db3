"""``python -m benchmarks``: benchmarks that print numbers (one JSON line each); they use vaccine_lib like any user."""
