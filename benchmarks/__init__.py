"""Benchmarks, run on demand (see benchmarks/overhead.py)."""
