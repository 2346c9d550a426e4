"""The pure core: facts (config, tensor names), exit and routing decisions, the deadline planner, text checks.

numpy and the standard library only; it imports no other package of this project. Everything else imports it:
the stub runtime (`adaptive_serving`), export, operations, the client and the benchmarks.
"""
