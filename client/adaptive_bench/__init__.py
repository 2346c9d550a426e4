"""Benchmarks against a real local Triton: early exit vs full depth (`exit`) and latency classes (`classes`).

    python -m adaptive_bench exit    [--repo DIR] [--export DIR] [--out results/bench-exit] [--quick]
    python -m adaptive_bench classes [--repo DIR] [--export DIR] [--out results/bench-classes] [--quick]

Each command starts its own tritonserver on free loopback ports, measures, and writes `results.json`,
`results.md` and one PNG under `--out`.
"""
