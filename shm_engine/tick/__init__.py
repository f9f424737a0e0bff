"""tick: the score pipeline around the kernels (layer 2, beside `ingest` and `clients`).

`ticker` is the tick worker (gather, kernels, publish through the latch);
`replay` runs the same gather and kernels on a logical clock.  It imports the
core, the wire format and `kernels`, never `ingest`, `clients` or `ops`
(tests/test_layers.py).
"""
