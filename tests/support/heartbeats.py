"""Heartbeats the wire tests share: one with every optional scalar field, one
with the required fields only, and the frame limit they decode under."""

MAX = 1 << 20

FULL = dict(
    node="n7",
    cpu=0.5,
    mem=0.25,
    queue=3.0,
    avg_job_s=0.2,
    throughput=10.0,
    ok=5,
    err=1,
    io=0.1,
    p50_ms=3.0,
    p95_ms=9.0,
    ts=1.7e9,
    zone="eu-1",
)
MINIMAL = dict(node="n7", cpu=0.5, mem=0.25, queue=3.0, avg_job_s=0.2)
