"""Benchmarks, measured rather than assumed: ``python -m benchmarks {infer,train,serve,blend} --help``."""
