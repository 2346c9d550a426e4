"""Reliability checks against a real server: bad inputs, overload, faults and soak.

`python -m adaptive_bench.reliability run` (make reliability) and `... soak` (make soak) call the same functions
as the tests in `tests/functional/test_reliability_*.py`:

  cases.py     what a bad-input case is, the oracle of its outcome, the hand-picked list
  strategies.py  hypothesis strategies that draw cases
  sender.py    send a case (gRPC, HTTP, raw HTTP, typed client), classify and judge the outcome
  suite.py     run hand-picked + hypothesis cases with good traffic beside them
  overload.py  open loop at a multiple of capacity: every request answered or rejected with a type, none lost
  faults.py    a stage unloaded and reloaded, a stub process killed, the server restarted, all under load
  soak.py      hours-style run at a share of capacity: memory growth and latency drift per window
  target.py    the server under test: sample texts, process-tree memory, which models to hit in the faults
  report.py    the one table, JSON and markdown
"""
