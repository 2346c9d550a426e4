"""Reliability checks against a real server: bad inputs, overload, faults and soak.

`python -m adaptive_client.reliability run` (make reliability) and `... soak` (make soak) call the same functions
as the tests in `tests/test_reliability_*.py`:

  cases.py     hand-picked bad inputs and a hypothesis-driven suite, with good traffic running beside them
  overload.py  open loop at a multiple of capacity: every request answered or rejected with a type, none lost
  faults.py    a stage unloaded and reloaded, a stub process killed, the server restarted, all under load
  soak.py      hours-style run at a share of capacity: memory growth and latency drift per window
  target.py    the server under test: sample texts, process-tree memory, which models to hit in the faults
  report.py    the one table, JSON and markdown
"""
