"""Operations: the tritonserver launcher and its watchdog, the repository builder, the offline bundle, recalibration.

Runs beside the server, never inside it. Imports the core and the stub runtime; nothing imports it but the client's
and benchmarks' launch helpers and the tests.
"""
