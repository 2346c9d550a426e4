"""The stub runtime: only what runs inside Triton's Python-backend stubs (gate, BLS calls, stage runners, metrics).

Imports the core (`adaptive_core`) and never export, operations or client code.
"""
