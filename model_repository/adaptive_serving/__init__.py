"""Adaptive inference on Triton: shared config, tensor names, server launcher and model-repository builder."""
