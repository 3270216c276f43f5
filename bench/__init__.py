"""Benchmarks: print figures, never asserted by tests."""
