"""Benchmarks of attnguide (run from the repository root: ``python -m benchmarks.guidance``)."""
