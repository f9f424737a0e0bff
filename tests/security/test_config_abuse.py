"""Configuration abuse: every bad configuration of the Security issue is
refused at load with the key and the value, before anything is created.

Before, these crashed ``run`` after it had created its segment (a traceback
and a segment left "starting"), or ran with a restart storm or nodes
forgotten while still scored.  Every integer key's bounds are tested from
one table that must list each integer key of the schema.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import fields

import pytest
import zmq

from shm_engine.core import config as config_module
from shm_engine.core.config import Config, check_files, load_config, with_overrides
from shm_engine.core.errors import ConfigError
from support.engine import cli, free_port, segment_exists, write_config
from support.users import OTHER_USER, as_other_user

I32 = 2**31 - 1
LONG_IPC = "ipc:///" + "d" * 110  # path of 111 bytes: over sun_path
LONG_TCP = "tcp://" + "h" * 250 + ":7710"  # 261 bytes: over the header's 255


# (TOML body, message pattern): the configurations the issue found accepted.
BAD_CONFIGS = [
    (
        "[engine]\ntick_interval_ms = 4294967296\n",
        r"engine\.tick_interval_ms = 4294967296 is too large: "
        r"an integer key is at most 2\*\*31 - 1",
    ),
    (
        "[engine]\ntick_interval_ms = 60001\n",
        r"engine\.tick_interval_ms = 60001 must be in 1\.\.60000",
    ),
    (
        f'[ingest]\nbind = "{LONG_IPC}"\n',
        r'ingest\.bind = "ipc:///d+" has an ipc path of 111 bytes, more than the 107',
    ),
    (
        f'[ingest]\nbind = "ipc:///{"é" * 60}"\n',  # 60 characters, 121 bytes
        r"has an ipc path of 121 bytes, more than the 107",
    ),
    (f'[ingest]\nbind = "{LONG_TCP}"\n', r"ingest\.bind = \"tcp://h+:7710\" is 261 bytes long"),
    (
        "[engine]\nhang_timeout_s = 1e-9\n",
        r"engine\.hang_timeout_s = 1e-09 must be 0 \(watchdog off\) or >= 1 and >= two ticks",
    ),
    ("[engine]\nhang_timeout_s = 0.5\n", r"engine\.hang_timeout_s = 0\.5 must be 0"),
    (
        "[engine]\ntick_interval_ms = 2000\nhang_timeout_s = 3\n",
        r"engine\.hang_timeout_s = 3 must be 0 \(watchdog off\) or >= 1 and >= two ticks \(4 s at "
        r"engine\.tick_interval_ms \(2000\)\)",
    ),
    (
        "[engine]\nforget_after_s = 5\n",
        r"engine\.forget_after_s = 5 must be > score\.dead_after_s \(10\): a node is DEAD before",
    ),
    (
        "[engine]\nforget_after_s = 10\n",
        r"engine\.forget_after_s = 10 must be > score\.dead_after_s",
    ),
    (
        "[engine]\nforget_after_s = 60\n[score]\ndead_after_s = 90\n",
        r"engine\.forget_after_s = 60 must be > score\.dead_after_s \(90\)",
    ),
    (
        "[score]\nsuspect_after_s = 12\n",
        r"score\.suspect_after_s = 12 must be < score\.dead_after_s \(10\)",
    ),
    ('[engine]\nshm_mode = "0666"\n', r"engine\.shm_mode = 0o666 gives every user write access"),
    ('[engine]\nshm_mode = "0660"\n', r"engine\.shm_mode = 0o660 gives the group write access"),
    ('[engine]\nshm_mode = "0662"\n', r"engine\.shm_mode = 0o662 gives every user write access"),
    ('[claims]\nshm_mode = "0666"\n', r"claims\.shm_mode = 0o666 gives every user write access"),
    ('[claims]\nshm_mode = "0662"\n', r"claims\.shm_mode = 0o662 gives every user write access"),
    (
        "[engine]\nshm_mode = 666\n",  # decimal 666 = 0o1232
        r"engine\.shm_mode = 0o1232 must include owner read\+write",
    ),
    ("a = " + "[" * 5000 + "\n", r"invalid TOML: arrays or tables nested too deeply"),
]


@pytest.mark.parametrize("body, pattern", BAD_CONFIGS)
def test_each_bad_config_is_refused_naming_key_and_value(tmp_path, body, pattern):
    path = tmp_path / "bad.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: .*{pattern}"):
        load_config(path)


def test_group_write_is_allowed_for_the_claims_segment_only():
    assert Config.from_dict({"claims": {"shm_mode": "0660"}}).claims.shm_mode == 0o660
    assert Config.from_dict({"engine": {"shm_mode": "0644"}}).engine.shm_mode == 0o644


def test_hang_timeout_edges_are_accepted():
    for engine in (
        {"hang_timeout_s": 0},
        {"hang_timeout_s": 1},
        {"tick_interval_ms": 2000, "hang_timeout_s": 4},
    ):
        Config.from_dict({"engine": engine})


def test_the_ipc_limit_is_the_one_libzmq_enforces(tmp_path):
    # 107 bytes bind; 108 are refused by libzmq itself.
    base = str(tmp_path) + "/"
    ok = base + "s" * (107 - len(base))
    Config.from_dict({"ingest": {"bind": "ipc://" + ok}})
    with pytest.raises(ConfigError, match="more than the 107"):
        Config.from_dict({"ingest": {"bind": "ipc://" + ok + "s"}})
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.PULL)
        sock.bind("ipc://" + ok)
        sock.close(0)
        sock = ctx.socket(zmq.PULL)
        with pytest.raises(zmq.ZMQError):
            sock.bind("ipc://" + ok + "s")
        sock.close(0)
    finally:
        ctx.term()
        if os.path.exists(ok):
            os.unlink(ok)


@pytest.mark.parametrize(
    "raw, where",
    [
        (b"[engine]\ncapacity = 64 # caf\xe9\n", r"byte 0xe9 at line 2, column 20"),
        (b"\xff\xfe[\x00e\x00", r"byte 0xff at line 1, column 1"),
    ],
)
def test_a_file_that_is_not_utf8_is_a_clear_error(tmp_path, raw, where):
    path = tmp_path / "latin1.toml"
    path.write_bytes(raw)
    with pytest.raises(
        ConfigError,
        match=rf"latin1\.toml: not UTF-8 text: {where} \(a TOML "
        r"file must be UTF-8\)",
    ):
        load_config(path)


def test_an_endless_file_is_not_read_whole(tmp_path):
    path = tmp_path / "huge.toml"
    path.write_bytes(b"# " + b"x" * config_module.MAX_FILE_BYTES + b"\n")
    with pytest.raises(ConfigError, match=r"huge\.toml: config file is larger than 1048576 bytes"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"/dev/zero: config file is larger than"):
        load_config("/dev/zero")


# ------------------------------------------------------------ integer bounds --
# Every integer key: (lowest, highest) accepted, and the other keys that a
# value at a bound needs (cross-key rules).  Both bounds are accepted, one
# past each is refused.
INT_BOUNDS = {
    "engine.capacity": (1, 16_777_216, {}),
    "engine.tick_interval_ms": (1, 60_000, {"engine.hang_timeout_s": 0}),
    "engine.tick_threads": (1, 64, {}),
    "ingest.max_frame_bytes": (1024, 256 << 20, {"ingest.max_queue_bytes": I32}),
    "ingest.drain_batch": (1, I32, {}),
    "ingest.max_heartbeats_per_frame": (1, I32, {}),
    # at least 2 x max_frame_bytes (1 MiB by default)
    "ingest.max_queue_bytes": (2 << 20, I32, {}),
    "ingest.registration_burst": (0, I32, {}),
    "ingest.registration_burst_per_sender": (0, I32, {}),
    "claims.max_schedulers": (1, 4096, {}),
    "events.capacity": (16, 2**24, {}),
    "score.min_requests": (1, I32, {}),
    "score.max_consecutive_errors": (1, I32, {}),
    "score.flap_window": (1, I32, {}),
    "score.quarantine_memory": (1, I32, {}),
    "score.probation_ticks": (1, I32, {}),
    "score.max_backoff": (1, I32, {}),
    "http.max_body_bytes": (1, 64 << 20, {}),
    "http.stream_interval_ms": (50, 10_000, {}),
    "http.max_streams": (1, 4096, {}),
    "http.nice": (0, 19, {}),
    "feed.full_every": (1, I32, {}),
    "placement.top_k": (1, 64, {}),
    "placement.max_reservations": (1, 1 << 20, {}),
    "scope.window": (2, 1_000_000, {"scope.min_samples": 2}),
    # at most scope.window (256 by default)
    "scope.min_samples": (2, 256, {}),
}


def _int_keys(cls=Config, path=""):
    for f in fields(cls):
        name = f"{path}.{f.name}" if path else f.name
        if f.metadata["kind"] == "section":
            yield from _int_keys(f.default_factory, name)
        elif f.metadata["kind"] == "int":
            yield name


def test_the_bounds_table_lists_every_integer_key():
    assert set(INT_BOUNDS) == set(_int_keys())


@pytest.mark.parametrize("key", sorted(INT_BOUNDS))
def test_integer_key_bounds(key):
    low, high, needs = INT_BOUNDS[key]
    for value in (low, high):
        cfg = with_overrides(Config(), {key: value, **needs})
        section, name = key.rsplit(".", 1)
        obj = cfg
        for part in section.split("."):
            obj = getattr(obj, part)
        assert getattr(obj, name) == value
    for value in (low - 1, high + 1, -(2**63), 2**64):
        with pytest.raises(ConfigError, match=rf"^{re.escape(key)} = {value} "):
            with_overrides(Config(), {key: value, **needs})


# ------------------------------------------------- files the config names --
def _curve(tmp_path, secret: str, keys: str):
    return write_config(
        tmp_path / "c.toml",
        free_port(),
        extra=(
            f'[ingest.curve]\nserver_secret_key_file = "{secret}"\nauthorized_keys_dir = "{keys}"\n'
        ),
    )


def test_check_files_names_the_key_and_the_problem(tmp_path):
    keys = tmp_path / "clients"
    keys.mkdir()
    secret = tmp_path / "server.key_secret"
    secret.write_text("secret")
    cases = [
        (
            tmp_path / "none.key_secret",
            keys,
            r'ingest\.curve\.server_secret_key_file = ".*none\.key_secret": no such file',
        ),
        (keys, keys, r"server_secret_key_file = \".*clients\" is a directory, not a key file"),
        (secret, tmp_path / "nodir", r'authorized_keys_dir = ".*nodir": no such directory'),
        (secret, secret, r'authorized_keys_dir = ".*server\.key_secret" is not a directory'),
    ]
    for s, k, pattern in cases:
        cfg = load_config(_curve(tmp_path, str(s), str(k)))
        with pytest.raises(ConfigError, match=pattern):
            check_files(cfg)
    check_files(load_config(_curve(tmp_path, str(secret), str(keys))))


def test_check_files_reports_an_unreadable_key_file():
    """Root reads any file: as root, the check runs as another user, in a
    directory every user may enter (only the key file itself is closed)."""
    base = tempfile.mkdtemp()
    try:
        os.chmod(base, 0o755)
        keys = os.path.join(base, "clients")
        os.mkdir(keys, 0o755)
        secret = os.path.join(base, "server.key_secret")
        with open(secret, "w") as fh:
            fh.write("secret")
        os.chmod(secret, 0o600 if os.geteuid() == 0 else 0)
        cfg = Config.from_dict(
            {"ingest": {"curve": {"server_secret_key_file": secret, "authorized_keys_dir": keys}}}
        )

        def check():
            with pytest.raises(
                ConfigError,
                match=r"server_secret_key_file = .*: cannot read "
                r"this file: Permission denied",
            ):
                check_files(cfg)
            os.listdir(keys)  # the directory was readable: only the file was not

        if os.geteuid() != 0:
            check()
        elif OTHER_USER is None:
            pytest.skip("root reads any file, and there is no 'nobody' user to check as")
        else:
            assert as_other_user(check) == 0
    finally:
        shutil.rmtree(base)


def test_config_check_command_checks_the_files_it_names(tmp_path):
    keys = tmp_path / "clients"
    keys.mkdir()
    missing = _curve(tmp_path, str(tmp_path / "gone.key_secret"), str(keys))
    out = cli("config", "--check", str(missing))
    assert out.returncode == 2
    assert re.search(
        rf"configuration error: {re.escape(str(missing))}: "
        r"ingest\.curve\.server_secret_key_file = .*gone\.key_secret\": no such file",
        out.stderr,
    ), out.stderr
    (tmp_path / "server.key_secret").write_text("secret")
    good = _curve(tmp_path, str(tmp_path / "server.key_secret"), str(keys))
    out = cli("config", "--check", str(good))
    assert out.returncode == 0 and ": OK" in out.stdout, out.stderr


# ------------------------------------------------ run creates nothing first --
@pytest.mark.parametrize(
    "body",
    [
        "[engine]\ntick_interval_ms = 4294967296\n",
        f'[ingest]\nbind = "{LONG_IPC}"\n',
        "[engine]\nhang_timeout_s = 1e-9\n",
        "[engine]\nforget_after_s = 5\n",
        '[engine]\nshm_mode = "0666"\n',
        '[ingest.curve]\nserver_secret_key_file = "/nonexistent/s.key_secret"\n'
        'authorized_keys_dir = "/nonexistent/clients"\n',
    ],
)
def test_run_refuses_a_bad_config_before_creating_anything(shm_name, tmp_path, body):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    run = cli("run", "--name", shm_name, "--config", str(path), timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("shm-engine: configuration error: "), run.stderr
    assert "Traceback" not in run.stderr
    assert not segment_exists(shm_name)
    assert not os.path.exists(f"/dev/shm/{shm_name}.claims")


def test_run_refuses_a_non_utf8_config(shm_name, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_bytes(b"[engine]\n# \xff\n")
    run = cli("run", "--name", shm_name, "--config", str(path), timeout=120)
    assert run.returncode == 2 and "not UTF-8 text: byte 0xff at line 2" in run.stderr
    assert not segment_exists(shm_name)


def test_a_config_that_fails_after_the_segments_exist_leaves_nothing(shm_name, tmp_path):
    """A bind that passes validation but fails at start (the port is taken):
    the ingest exits fatally after the segments were made; ``run`` removes
    them and exits 1."""
    ctx = zmq.Context()
    taken = ctx.socket(zmq.PULL)
    port = taken.bind_to_random_port("tcp://127.0.0.1")
    try:
        config = write_config(tmp_path / "e.toml", port)
        run = cli("run", "--name", shm_name, "--config", str(config), timeout=300)
    finally:
        taken.close(0)
        ctx.term()
    assert run.returncode == 1, run.stderr
    assert "ingest_bind_failed" in run.stderr and "engine_stopped" in run.stderr, run.stderr
    assert not segment_exists(shm_name)
    assert not os.path.exists(f"/dev/shm/{shm_name}.claims")
