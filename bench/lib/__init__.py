"""Shared helpers of the benchmarks: load generators, process handling, tables."""
