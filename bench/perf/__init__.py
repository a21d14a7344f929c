"""Throughput benchmarks (`bench perf`), each measured against a baseline in the same run."""
