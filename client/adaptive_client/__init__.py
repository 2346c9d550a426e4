"""Typed clients for the adaptive Triton entry model."""
