"""Profiling toolkit: NVML sampling, torch profiler, roofline, server statistics."""
