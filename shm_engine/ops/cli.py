"""The ``shm-engine`` command line.

Each subcommand imports its implementation lazily, so ``shm-engine status``
does not pay for compiling kernels.  Exit codes: 0 success, 1 runtime
failure, 2 usage/configuration error or no such engine.
"""

from __future__ import annotations

import argparse
import json
import sys

from shm_engine.core.errors import ConfigError, ShmEngineError
from shm_engine.core.runtime import DEFAULT_NAME


def _config(path):
    from shm_engine.core.config import load_config

    return load_config(path)


# ------------------------------------------------------------ subcommands --
def cmd_replay(args) -> int:
    from shm_engine.tick.replay import replay

    cfg = _config(args.config)
    stream = open(args.trace, encoding="utf-8") if args.trace != "-" else sys.stdin
    out = sys.stdout
    dumps = json.dumps
    try:
        with stream:
            for rec in replay(stream, cfg, ticks=args.ticks):
                out.write(dumps(rec, separators=(",", ":")))
                out.write("\n")
    except BrokenPipeError:
        return 0
    return 0


def cmd_config(args) -> int:
    from shm_engine.core.config import check_files, render_defaults

    if args.print_defaults:
        sys.stdout.write(render_defaults())
        return 0
    if args.check:
        cfg = _config(args.check)
        try:
            check_files(cfg)
        except ConfigError as err:
            raise ConfigError(f"{args.check}: {err}") from err
        print(
            f"{args.check}: OK (capacity {cfg.engine.capacity}, "
            f"tick {cfg.engine.tick_interval_ms} ms, bind {cfg.ingest.bind})"
        )
        return 0
    print("shm-engine config: give --print-defaults or --check FILE", file=sys.stderr)
    return 2


def _owner(text: str) -> int | str:
    """``--owner``: a uid (digits) or a user name."""
    return int(text) if text.isdigit() else text


def _lazy(module: str, func: str):
    def run(args):
        import importlib

        return getattr(importlib.import_module(module), func)(args)

    return run


# ----------------------------------------------------------------- parser --
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shm-engine", description="Node desirability scoring through shared memory."
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("replay", help="run the scoring kernels over a JSONL trace")
    r.add_argument("trace", help="trace file (JSON lines), or - for stdin")
    r.add_argument("--config", help="TOML configuration file")
    r.add_argument("--ticks", type=int, help="compute ticks 0..N-1")
    r.set_defaults(func=cmd_replay)

    c = sub.add_parser("config", help="print or check configuration")
    c.add_argument(
        "--print-defaults",
        action="store_true",
        help="print a complete, commented default configuration file",
    )
    c.add_argument(
        "--check",
        metavar="FILE",
        help="validate FILE, and that the files it names exist and are readable",
    )
    c.set_defaults(func=cmd_config)

    def name_arg(sp):
        sp.add_argument(
            "--name",
            default=DEFAULT_NAME,
            help=f"engine name (shared-memory segment /NAME; default {DEFAULT_NAME})",
        )

    def owner_arg(sp):
        sp.add_argument(
            "--owner",
            default=None,
            type=_owner,
            help="user the engine runs as (name or uid); its segments must belong "
            "to it (default: this user)",
        )

    run = sub.add_parser("run", help="run the engine (supervisor, ingest, tick worker)")
    run.add_argument("--config", help="TOML configuration file")
    run.add_argument(
        "--bind",
        metavar="ADDR",
        help="ingest endpoint, e.g. tcp://127.0.0.1:7711 (overrides [ingest] bind)",
    )
    name_arg(run)
    run.set_defaults(func=_lazy("shm_engine.ops.supervisor", "cmd_run"))

    st = sub.add_parser("status", help="show a running engine's status")
    name_arg(st)
    owner_arg(st)
    st.add_argument("--json", action="store_true", help="one JSON object")
    st.set_defaults(func=_lazy("shm_engine.ops.status", "cmd_status"))

    top = sub.add_parser("top", help="live terminal view of a running engine")
    name_arg(top)
    owner_arg(top)
    top.add_argument("--interval", type=float, default=0.5, help="refresh seconds")
    top.add_argument("--rows", type=int, default=25, help="nodes shown")
    top.set_defaults(func=_lazy("shm_engine.ops.topview", "cmd_top"))

    demo = sub.add_parser("demo", help="run an engine with a simulated fleet and watch it")
    demo.add_argument("--nodes", type=int, default=200)
    demo.add_argument(
        "--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)"
    )
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--name", default=None, help="engine name (default: a unique demo name)")
    demo.add_argument("--config", help="TOML configuration file")
    demo.add_argument("--no-view", action="store_true", help="no live view, summary only")
    demo.add_argument(
        "--zones",
        type=int,
        default=0,
        help="run N engines (one per zone) and a federating mirror, and watch the mirror",
    )
    demo.set_defaults(func=_lazy("shm_engine.ops.demo.cli", "cmd_demo"))

    ag = sub.add_parser("agent", help="sample this machine and send heartbeats")
    ag.add_argument(
        "--endpoint", required=True, help="engine ingest endpoint, e.g. tcp://host:7710"
    )
    ag.add_argument("--node-id", default=None, help="node id (default: host name)")
    ag.add_argument("--interval", type=float, default=1.0, help="seconds between heartbeats")
    ag.add_argument(
        "--listen",
        default=None,
        help="local endpoint where the node's service reports queue/job stats",
    )
    ag.add_argument("--count", type=int, default=None, help="stop after N heartbeats")
    ag.add_argument("--curve-server-key", default=None, help="engine's public CURVE key file")
    ag.add_argument("--curve-client-key", default=None, help="this agent's CURVE secret key file")
    ag.set_defaults(func=_lazy("clients.agent", "cmd_agent"))

    met = sub.add_parser("metrics", help="Prometheus exporter reading the engine's segment")
    name_arg(met)
    owner_arg(met)
    met.add_argument("--listen", default="127.0.0.1:9710", help="HOST:PORT to serve /metrics on")
    met.add_argument(
        "--per-node",
        action="store_true",
        help="also export per-node score and state (cardinality = fleet size)",
    )
    met.set_defaults(func=_lazy("shm_engine.ops.metrics", "cmd_metrics"))

    ev = sub.add_parser("events", help="show node state changes and why (the event log)")
    name_arg(ev)
    owner_arg(ev)
    ev.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    ev.add_argument("--node", default=None, help="only this node's events")
    ev.add_argument("--json", action="store_true", help="one JSON object per line")
    ev.add_argument("--since", type=int, default=0, metavar="SEQ", help="events numbered above SEQ")
    ev.set_defaults(func=_lazy("shm_engine.ops.eventscmd", "cmd_events"))
    mir = sub.add_parser(
        "mirror", help="mirror one engine's scores (or several zones') from their score feeds"
    )
    mir.add_argument(
        "--from",
        dest="sources",
        action="append",
        required=True,
        metavar="[ZONE=]tcp://HOST:PORT",
        help="an engine's [feed] bind; repeat for one engine per zone",
    )
    name_arg(mir)
    mir.add_argument("--capacity", type=int, default=16384, help="node slots of the mirror")
    mir.add_argument(
        "--zone-slots", type=int, default=None, help="slots per upstream (default: an equal share)"
    )
    mir.add_argument(
        "--stale-after",
        type=float,
        default=0.5,
        help="seconds without a frame before a zone is stale and left out of pick()",
    )
    mir.add_argument("--max-schedulers", type=int, default=64, help="claims leases on this host")
    mir.add_argument("--curve-server-key", default=None, help="the feed's public CURVE key file")
    mir.add_argument("--curve-client-key", default=None, help="this mirror's CURVE secret key file")
    mir.set_defaults(func=_lazy("shm_engine.feed.mirror", "cmd_mirror"))
    pl = sub.add_parser(
        "place", help="a trial placement on a running engine (reserved, shown, released)"
    )
    name_arg(pl)
    owner_arg(pl)
    pl.add_argument("--cpu", type=float, default=None, help="CPUs the job requests")
    pl.add_argument("--mem-gb", type=float, default=None, help="memory the job requests, GB")
    pl.add_argument("--gpu", type=float, default=None, help="GPUs the job requests")
    pl.add_argument(
        "--request", action="append", metavar="NAME=AMOUNT", help="another resource request"
    )
    pl.add_argument("--selector", action="append", metavar="KEY=VALUE", help="node label")
    pl.add_argument(
        "--toleration", action="append", metavar="KEY=VALUE:EFFECT", help="a tolerated taint"
    )
    pl.add_argument("--zone", action="append", help="a zone the node must be in")
    pl.add_argument("--group", default=None, help="job group (anti-affinity)")
    pl.add_argument("--spread", type=int, default=0, help="most placements of the group per node")
    pl.add_argument(
        "--explain", action="store_true", help="per filter, the nodes it eliminated; top nodes"
    )
    pl.add_argument("--json", action="store_true", help="one JSON object")
    pl.set_defaults(func=_lazy("shm_engine.ops.place", "cmd_place"))

    keys = sub.add_parser("keys", help="generate a CURVE key pair")
    keys.add_argument("directory", help="where to write NAME.key and NAME.key_secret")
    keys.add_argument("--key-name", default="engine", help="file base name")
    keys.set_defaults(func=_lazy("shm_engine.ops.keys", "cmd_keys"))
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"shm-engine: configuration error: {err}", file=sys.stderr)
        return 2
    except ShmEngineError as err:
        print(f"shm-engine: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"shm-engine: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
