"""ingest: the heartbeat pipeline's first stage (layer 2, beside `tick` and `clients`).

`process` is the ingest process (ZeroMQ PULL -> validated rows in the
segment), `admission` decides who may send what, `zap` checks CURVE
handshakes, `_checks` holds its compiled batch checks, `counters` reads
its header counters in the order readers need.  It imports the core
and the wire format, never `tick`, `clients` or `ops` (tests/test_layers.py).
"""
