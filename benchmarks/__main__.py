"""``python -m benchmarks run|sim ...``: the benchmark harness and the routing simulator."""

import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: python -m benchmarks {run,sim} [options]\n"
            "  run   performance harness (tick, read path and pick, claims, ingest, freshness,\n"
            "        memory)\n"
            "  sim   routing-quality simulator (policies x scenarios)"
        )
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "run":
        from benchmarks.harness import main as run_main

        return run_main(rest)
    if cmd == "sim":
        from benchmarks.sim import main as sim_main

        return sim_main(rest)
    print(f"python -m benchmarks: unknown command {cmd!r} (use run or sim)", file=sys.stderr)
    return 2


raise SystemExit(main())
