"""ops: the operator tools (layer 3, the top).

The supervisor (`shm-engine run`), the CLI, status, top, the Prometheus
exporter, CURVE key generation, the engine-process helper and the demo.  It
may import every layer below; nothing below imports it (tests/test_layers.py).
"""
