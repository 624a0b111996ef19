"""Benchmarks for hookd: ``make bench`` (quick) or ``BENCH_PROFILE=full make bench``."""
