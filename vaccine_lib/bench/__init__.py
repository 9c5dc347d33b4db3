"""Benchmarks that print numbers (one JSON line each); run with ``python -m vaccine_lib.bench``."""
