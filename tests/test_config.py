"""Tests of shm_engine.core.config: defaults (= docs/scoring.md, score version
2), types, every range and consistency rule, file loading, the default-file
round trip, renamed keys, and the kernels' parameter vector."""

import dataclasses
import math
import re
import tomllib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import params as kp
from shm_engine.core.config import (
    Config,
    CurveConfig,
    ScoreConfig,
    Weights,
    load_config,
    parse_override,
    render_config,
    render_defaults,
    with_overrides,
)
from shm_engine.core.errors import ConfigError


def nested(dotted: dict) -> dict:
    """{"score.weights.cpu": 1} -> {"score": {"weights": {"cpu": 1}}}."""
    out: dict = {}
    for key, value in dotted.items():
        *sections, last = key.split(".")
        node = out
        for s in sections:
            node = node.setdefault(s, {})
        node[last] = value
    return out


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


# --------------------------------------------------------------------------
# Defaults

# Copied by hand from the definition (SCORING.md version 2; docs/scoring.md's
# configuration table, step letter in the comment), not from config.py or
# kernels/defaults.py.
SCORING_DEFAULTS = {
    "score.alpha_queue": 0.3,  # step A
    "score.max_cpu": 0.98,  # step G
    "score.max_mem": 0.95,  # step G
    "score.max_wait_s": 30.0,  # step G
    "score.max_tail_ratio": 3.0,  # step G
    "score.suspect_after_s": 2.0,  # step D
    "score.dead_after_s": 10.0,  # step D
    "score.error_half_life_s": 10.0,  # step C
    "score.weights.cpu": 0.20,  # step G
    "score.weights.mem": 0.15,
    "score.weights.io": 0.05,
    "score.weights.wait": 0.25,
    "score.weights.rate": 0.15,
    "score.weights.success": 0.15,
    "score.weights.tail": 0.05,
    "score.k1": 0.5,  # step G
    "score.k2": 0.3,
    "score.max_queue": 100.0,  # step I
    "score.limit_critical": 50.0,
    "score.min_requests": 10,  # step H
    "score.max_error_rate": 0.5,
    "score.max_consecutive_errors": 5,  # step H
    "score.ejection_s": 5.0,
    "score.beta": 0.5,  # step J
    "score.t_degraded": 0.40,  # step K
    "score.t_overloaded": 0.20,
    "score.delta": 0.10,
    "score.flap_window": 50,  # steps L-N
    "score.max_flaps": 6.0,
    "score.max_quarantined_fraction": 0.5,
    "score.quarantine_memory": 1000,
    "score.probation_ticks": 30,
    "score.max_backoff": 8,
}

OPERATIONAL_DEFAULTS = {
    "engine.capacity": 16384,  # SCORING.md "Inputs"
    "engine.tick_interval_ms": 50,  # SCORING.md "Replay"
    "engine.forget_after_s": 300.0,  # SCORING.md "Inputs"
    "engine.tick_threads": 1,
    "engine.shm_mode": 0o600,
    "engine.restart_backoff_min_s": 0.5,
    "engine.restart_backoff_max_s": 10.0,
    "engine.parent_check_interval_s": 0.5,
    "engine.hang_timeout_s": 10.0,
    "engine.warm_spares": True,
    "ingest.bind": "tcp://127.0.0.1:7710",
    "ingest.max_frame_bytes": 1048576,
    "ingest.drain_batch": 1024,
    "ingest.max_heartbeats_per_frame": 8192,
    "ingest.max_queue_bytes": 128 << 20,
    "ingest.allow_insecure": False,
    "ingest.allow_nodes": [],
    "ingest.peer_nodes_file": "",
    "ingest.registration_rate": 1000.0,
    "ingest.registration_burst": 16384,
    "ingest.registration_rate_per_sender": 100.0,
    "ingest.registration_burst_per_sender": 1024,
    "ingest.reject_log_interval_s": 1.0,
    "ingest.curve.server_secret_key_file": "",
    "ingest.curve.authorized_keys_dir": "",
    "claims.shm_mode": 0o600,
    "claims.max_schedulers": 64,
    "events.capacity": 65536,
    "feed.bind": "",
    "feed.full_every": 100,
    "feed.feedback_bind": "",
    "feed.mirror_timeout_s": 2.0,
    "feed.allow_insecure": False,
    "feed.curve.server_secret_key_file": "",
    "feed.curve.authorized_keys_dir": "",
    "http.bind": "127.0.0.1:7720",
    "http.token_file": "",
    "http.tls_cert": "",
    "http.tls_key": "",
    "http.max_body_bytes": 1048576,
    "http.stream_interval_ms": 250,
    "http.max_streams": 64,
    "http.nice": 5,
    "http.curve_client_key_file": "",
    "http.place_ttl_s": 60.0,
    "http.max_place_ttl_s": 3600.0,
    # docs/placement.md
    "placement.resources.cpu": 1000,
    "placement.resources.mem_gb": 1000,
    "placement.resources.gpu": 1,
    "placement.fit": "least",
    "placement.top_k": 4,
    "placement.max_reservations": 1024,
    "placement.cost_label": "cost",
    "placement.data_label_prefix": "data/",
    "placement.weights.fit": 30.0,
    "placement.weights.affinity": 20.0,
    "placement.weights.load": 20.0,
    "placement.weights.locality": 20.0,
    "placement.weights.cost": 10.0,
    # issue 11's scope escalation
    "scope.enabled": True,
    "scope.min_samples": 10,
    "scope.interval_s": 2.0,
    "scope.window": 256,
    "scope.max_age_s": 30.0,
    "scope.federated_soft": 1.5,
    "scope.federated_hard": 2.5,
    "scope.centralized_soft": 1.7,
    "scope.centralized_hard": 2.7,
    "scope.neighbours": [],
}

ALL_DEFAULTS = {**SCORING_DEFAULTS, **OPERATIONAL_DEFAULTS}

INT_KEYS = {
    "engine.capacity",
    "engine.tick_interval_ms",
    "engine.tick_threads",
    "engine.shm_mode",
    "score.min_requests",
    "score.max_consecutive_errors",
    "score.flap_window",
    "score.quarantine_memory",
    "score.probation_ticks",
    "score.max_backoff",
    "ingest.max_frame_bytes",
    "ingest.drain_batch",
    "ingest.max_heartbeats_per_frame",
    "ingest.max_queue_bytes",
    "ingest.registration_burst",
    "ingest.registration_burst_per_sender",
    "claims.shm_mode",
    "claims.max_schedulers",
    "events.capacity",
    "feed.full_every",
    "http.max_body_bytes",
    "http.stream_interval_ms",
    "http.max_streams",
    "http.nice",
    "placement.resources.cpu",
    "placement.resources.mem_gb",
    "placement.resources.gpu",
    "placement.top_k",
    "placement.max_reservations",
    "scope.min_samples",
    "scope.window",
}


def test_defaults_are_exactly_the_documented_ones():
    assert flatten(Config().to_dict()) == ALL_DEFAULTS


def test_every_score_parameter_of_the_kernels_has_a_documented_default():
    # Every parameter is a [score] key, except the tick's length, [engine]'s.
    engine_keys = {"tick_interval_ms"}
    assert {f"score.{n}" for n in kp.PARAM_NAMES if n not in engine_keys} == set(SCORING_DEFAULTS)
    assert engine_keys <= set(kp.PARAM_NAMES)
    assert all(f"engine.{n}" in OPERATIONAL_DEFAULTS for n in engine_keys)


@pytest.mark.parametrize("key", sorted(ALL_DEFAULTS))
def test_default_types(key):
    value = flatten(Config().to_dict())[key]
    if key in INT_KEYS:
        assert type(value) is int
    elif isinstance(ALL_DEFAULTS[key], str):
        assert type(value) is str
    elif isinstance(ALL_DEFAULTS[key], bool):
        assert type(value) is bool
    elif isinstance(ALL_DEFAULTS[key], list):
        assert type(value) is list and all(type(v) is str for v in value)
    else:
        assert type(value) is float


def test_empty_dict_and_none_path_give_defaults():
    assert Config.from_dict({}) == Config()
    assert Config.from_dict({"score": {}, "ingest": {"curve": {}}}) == Config()
    assert load_config(None) == Config()


def test_partial_dict_keeps_other_defaults():
    cfg = Config.from_dict({"score": {"beta": 0.7, "weights": {"io": 0.0}}})
    assert cfg.score.beta == 0.7
    assert cfg.score.weights.io == 0.0
    assert cfg.score.weights.cpu == 0.20
    assert cfg.score.alpha_queue == 0.3
    assert cfg.engine == Config().engine


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().score.beta = 0.9  # type: ignore[misc]


# --------------------------------------------------------------------------
# Parameter vector


def test_to_params_shape_and_dtype():
    p = Config().to_params()
    assert p.shape == (kp.N_PARAMS,)
    assert p.dtype == np.float64


@pytest.mark.parametrize(
    "index, expected",
    [
        (kp.ALPHA_QUEUE, 0.3),
        (kp.MAX_CPU, 0.98),
        (kp.MAX_MEM, 0.95),
        (kp.MAX_WAIT_S, 30.0),
        (kp.MAX_TAIL_RATIO, 3.0),
        (kp.SUSPECT_AFTER_S, 2.0),
        (kp.DEAD_AFTER_S, 10.0),
        (kp.W_CPU, 0.20),
        (kp.W_MEM, 0.15),
        (kp.W_IO, 0.05),
        (kp.W_WAIT, 0.25),
        (kp.W_RATE, 0.15),
        (kp.W_SUCCESS, 0.15),
        (kp.W_TAIL, 0.05),
        (kp.K1, 0.5),
        (kp.K2, 0.3),
        (kp.MAX_QUEUE, 100.0),
        (kp.LIMIT_CRITICAL, 50.0),
        (kp.MIN_REQUESTS, 10.0),
        (kp.MAX_ERROR_RATE, 0.5),
        (kp.BETA, 0.5),
        (kp.T_DEGRADED, 0.40),
        (kp.T_OVERLOADED, 0.20),
        (kp.DELTA, 0.10),
        (kp.FLAP_WINDOW, 50.0),
        (kp.MAX_FLAPS, 6.0),
        (kp.MAX_QUARANTINED_FRACTION, 0.5),
        (kp.QUARANTINE_MEMORY, 1000.0),
        (kp.PROBATION_TICKS, 30.0),
        (kp.MAX_BACKOFF, 8.0),
        (kp.ERROR_HALF_LIFE_S, 10.0),
        (kp.MAX_CONSECUTIVE_ERRORS, 5.0),
        (kp.EJECTION_S, 5.0),
        (kp.TICK_INTERVAL_MS, 50.0),
    ],
)
def test_to_params_default_positions(index, expected):
    assert Config().to_params()[index] == expected


def test_to_params_follows_overrides_by_name():
    # Give every parameter a distinct valid value so a swapped position shows.
    cfg = with_overrides(
        Config(),
        {
            "score.beta": 0.7,
            "score.weights.tail": 0.07,
            "score.k2": 0.33,
            "score.max_backoff": 9,
            "score.limit_critical": 42,
            "score.weights.rate": 0.17,
            "score.error_half_life_s": 2.5,
            "score.max_consecutive_errors": 3,
            "score.ejection_s": 1.5,
            "engine.tick_interval_ms": 20,
        },
    )
    p = cfg.to_params()
    assert p[kp.BETA] == 0.7
    assert p[kp.W_TAIL] == 0.07
    assert p[kp.K2] == 0.33
    assert p[kp.MAX_BACKOFF] == 9.0
    assert p[kp.LIMIT_CRITICAL] == 42.0
    assert p[kp.W_RATE] == 0.17
    assert p[kp.ERROR_HALF_LIFE_S] == 2.5
    assert p[kp.MAX_CONSECUTIVE_ERRORS] == 3.0
    assert p[kp.EJECTION_S] == 1.5
    assert p[kp.TICK_INTERVAL_MS] == 20.0  # [engine]'s key, not a [score] one
    # Every other position unchanged.
    base = Config().to_params()
    changed = {
        kp.BETA,
        kp.W_TAIL,
        kp.K2,
        kp.MAX_BACKOFF,
        kp.LIMIT_CRITICAL,
        kp.W_RATE,
        kp.ERROR_HALF_LIFE_S,
        kp.MAX_CONSECUTIVE_ERRORS,
        kp.EJECTION_S,
        kp.TICK_INTERVAL_MS,
    }
    for i in range(kp.N_PARAMS):
        if i not in changed:
            assert p[i] == base[i], kp.PARAM_NAMES[i]


def test_score_to_params_takes_the_tick_length_explicitly():
    # The [score] section alone does not know the tick: no silent default.
    with pytest.raises(TypeError):
        Config().score.to_params()  # type: ignore[call-arg]
    assert Config().score.to_params(20)[kp.TICK_INTERVAL_MS] == 20.0


# --------------------------------------------------------------------------
# Types


def test_int_accepted_for_float_key_and_stored_as_float():
    cfg = Config.from_dict(nested({"score.max_wait_s": 45, "score.weights.cpu": 1}))
    assert cfg.score.max_wait_s == 45.0 and type(cfg.score.max_wait_s) is float
    assert type(cfg.score.weights.cpu) is float


def test_constructor_converts_ints_too():
    assert type(ScoreConfig(beta=1).beta) is float


TYPE_ERRORS = [
    # (dotted key, value, expected message pattern)
    ("score.beta", True, r"score\.beta = true has type boolean, expected a float"),
    ("score.max_queue", False, r"score\.max_queue = false has type boolean"),
    ("score.beta", "0.5", r'score\.beta = "0\.5" has type string, expected a float'),
    ("score.weights.cpu", [0.2], r"score\.weights\.cpu = \[0\.2\] has type array"),
    ("score.flap_window", 50.0, r"score\.flap_window = 50\.0 has type float, expected an integer"),
    (
        "score.min_requests",
        True,
        r"score\.min_requests = true has type boolean, expected an integer",
    ),
    (
        "score.max_consecutive_errors",
        5.0,
        r"score\.max_consecutive_errors = 5\.0 has type float, expected an integer",
    ),
    ("score.ejection_s", "5s", r'score\.ejection_s = "5s" has type string, expected a float'),
    (
        "engine.capacity",
        16384.5,
        r"engine\.capacity = 16384\.5 has type float, expected an integer",
    ),
    ("engine.capacity", "16384", r'engine\.capacity = "16384" has type string'),
    ("ingest.drain_batch", 1.0, r"ingest\.drain_batch = 1\.0 has type float"),
    ("ingest.max_queue_bytes", 1e9, r"ingest\.max_queue_bytes = 1000000000\.0 has type float"),
    (
        "ingest.allow_nodes",
        "web-*",
        r'ingest\.allow_nodes = "web-\*" has type string, '
        r"expected an array of strings",
    ),
    (
        "ingest.allow_nodes",
        ["a", 1],
        r'ingest\.allow_nodes = \["a", 1\]: element 1 has type '
        r"integer, expected a string",
    ),
    (
        "ingest.allow_insecure",
        1,
        r"ingest\.allow_insecure = 1 has type integer, expected a "
        r"boolean",
    ),
    ("engine.warm_spares", 1, r"engine\.warm_spares = 1 has type integer, expected a boolean"),
    ("engine.warm_spares", "yes", r'engine\.warm_spares = "yes" has type string'),
    ("ingest.bind", 7710, r"ingest\.bind = 7710 has type integer, expected a string"),
    (
        "ingest.curve.authorized_keys_dir",
        False,
        r"ingest\.curve\.authorized_keys_dir = false has type boolean, expected a string",
    ),
    ("engine.shm_mode", 384.0, r"engine\.shm_mode = 384\.0 has type float"),
    ("engine.shm_mode", True, r"engine\.shm_mode = true has type boolean"),
    ("engine.shm_mode", "rw-------", r'engine\.shm_mode = "rw-------" is not an octal mode'),
    ("engine.shm_mode", "0x180", r'engine\.shm_mode = "0x180" is not an octal mode'),
    ("score.max_wait_s", math.inf, r"score\.max_wait_s = inf must be finite"),
    ("score.weights.io", math.nan, r"score\.weights\.io = nan must be finite"),
    ("score.beta", {"x": 1}, r"score\.beta = \{\.\.\.\} has type table"),
    (
        "score.quarantine_memory",
        2**60,
        r"score\.quarantine_memory = 1152921504606846976 is too large",
    ),
]


@pytest.mark.parametrize("key, value, pattern", TYPE_ERRORS)
def test_type_errors(key, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        Config.from_dict(nested({key: value}))


# --------------------------------------------------------------------------
# Ranges and consistency: every rule, with the value in the message.

RANGE_ERRORS = [
    ("score.alpha_queue", 0, r"score\.alpha_queue = 0 must be in \(0, 1\]"),
    ("score.alpha_queue", 1.5, r"score\.alpha_queue = 1\.5 must be in \(0, 1\]"),
    ("score.beta", 0.0, r"score\.beta = 0 must be in \(0, 1\]"),
    ("score.beta", 1.01, r"score\.beta = 1\.01 must be in \(0, 1\]"),
    ("score.max_cpu", 0, r"score\.max_cpu = 0 must be in \(0, 1\]"),
    ("score.max_cpu", 1.2, r"score\.max_cpu = 1\.2 must be in \(0, 1\]"),
    ("score.max_mem", -0.5, r"score\.max_mem = -0\.5 must be in \(0, 1\]"),
    ("score.max_wait_s", 0, r"score\.max_wait_s = 0 must be > 0"),
    ("score.max_wait_s", -3.5, r"score\.max_wait_s = -3\.5 must be > 0"),
    ("score.max_tail_ratio", 1, r"score\.max_tail_ratio = 1 must be > 1"),
    ("score.max_tail_ratio", 0.5, r"score\.max_tail_ratio = 0\.5 must be > 1"),
    ("score.suspect_after_s", -1, r"score\.suspect_after_s = -1 must be >= 0"),
    (
        "score.suspect_after_s",
        10,
        r"score\.suspect_after_s = 10 must be < score\.dead_after_s \(10\)",
    ),
    (
        "score.dead_after_s",
        1.5,
        r"score\.suspect_after_s = 2 must be < score\.dead_after_s \(1\.5\)",
    ),
    ("score.k1", -0.1, r"score\.k1 = -0\.1 must be >= 0"),
    ("score.k2", -1, r"score\.k2 = -1 must be >= 0"),
    ("score.max_queue", 0, r"score\.max_queue = 0 must be > 0"),
    ("score.limit_critical", -1, r"score\.limit_critical = -1 must be >= 0"),
    (
        "score.limit_critical",
        120,
        r"score\.limit_critical = 120 must be < score\.max_queue \(100\)",
    ),
    (
        "score.limit_critical",
        100,
        r"score\.limit_critical = 100 must be < score\.max_queue \(100\)",
    ),
    ("score.max_queue", 50, r"score\.limit_critical = 50 must be < score\.max_queue \(50\)"),
    ("score.min_requests", 0, r"score\.min_requests = 0 must be >= 1"),
    ("score.error_half_life_s", 0, r"score\.error_half_life_s = 0 must be > 0"),
    ("score.error_half_life_s", -10, r"score\.error_half_life_s = -10 must be > 0"),
    ("score.max_consecutive_errors", 0, r"score\.max_consecutive_errors = 0 must be >= 1"),
    ("score.ejection_s", 0, r"score\.ejection_s = 0 must be > 0"),
    ("score.weights.rate", -0.1, r"score\.weights\.rate = -0\.1 must be >= 0"),
    ("score.max_error_rate", 0, r"score\.max_error_rate = 0 must be in \(0, 1\]"),
    ("score.max_error_rate", 1.5, r"score\.max_error_rate = 1\.5 must be in \(0, 1\]"),
    ("score.t_degraded", 0, r"score\.t_degraded = 0 must be in \(0, 1\]"),
    ("score.t_degraded", 0.2, r"score\.t_overloaded = 0\.2 must be < score\.t_degraded \(0\.2\)"),
    ("score.t_overloaded", 0.5, r"score\.t_overloaded = 0\.5 must be < score\.t_degraded \(0\.4\)"),
    ("score.t_overloaded", -0.1, r"score\.t_overloaded = -0\.1 must be >= 0"),
    ("score.delta", -0.01, r"score\.delta = -0\.01 must be >= 0"),
    ("score.flap_window", 0, r"score\.flap_window = 0 must be >= 1"),
    ("score.max_flaps", 0, r"score\.max_flaps = 0 must be > 0"),
    ("score.max_flaps", -2.5, r"score\.max_flaps = -2\.5 must be > 0"),
    (
        "score.max_quarantined_fraction",
        -0.1,
        r"score\.max_quarantined_fraction = -0\.1 must be in \[0, 1\]",
    ),
    (
        "score.max_quarantined_fraction",
        1.1,
        r"score\.max_quarantined_fraction = 1\.1 must be in \[0, 1\]",
    ),
    ("score.quarantine_memory", 0, r"score\.quarantine_memory = 0 must be >= 1"),
    ("score.probation_ticks", 0, r"score\.probation_ticks = 0 must be >= 1"),
    ("score.max_backoff", -3, r"score\.max_backoff = -3 must be >= 1"),
    ("score.weights.cpu", -0.2, r"score\.weights\.cpu = -0\.2 must be >= 0"),
    ("score.weights.tail", -1, r"score\.weights\.tail = -1 must be >= 0"),
    ("engine.capacity", 0, r"engine\.capacity = 0 must be in 1\.\.16777216"),
    ("engine.capacity", 16_777_217, r"engine\.capacity = 16777217 must be in 1\.\.16777216"),
    ("engine.tick_interval_ms", 0, r"engine\.tick_interval_ms = 0 must be in 1\.\.60000"),
    ("engine.forget_after_s", 0, r"engine\.forget_after_s = 0 must be > 0"),
    ("engine.tick_threads", 0, r"engine\.tick_threads = 0 must be in 1\.\.64"),
    ("engine.parent_check_interval_s", 0, r"engine\.parent_check_interval_s = 0 must be > 0"),
    ("engine.hang_timeout_s", -1, r"engine\.hang_timeout_s = -1 must be >= 0 \(0 turns"),
    ("engine.restart_backoff_min_s", 0, r"engine\.restart_backoff_min_s = 0 must be > 0"),
    (
        "engine.restart_backoff_min_s",
        20,
        r"engine\.restart_backoff_min_s = 20 must be <= engine\.restart_backoff_max_s \(10\)",
    ),
    (
        "engine.restart_backoff_max_s",
        0.25,
        r"engine\.restart_backoff_min_s = 0\.5 must be <= engine\.restart_backoff_max_s \(0\.25\)",
    ),
    ("engine.shm_mode", 0o400, r"engine\.shm_mode = 0o400 must include owner read\+write"),
    (
        "engine.shm_mode",
        0o700,
        r"engine\.shm_mode = 0o700 must include owner read\+write .* no bits outside 0o666",
    ),
    ("engine.shm_mode", 0o4600, r"engine\.shm_mode = 0o4600 must include"),
    ("engine.shm_mode", "0755", r"engine\.shm_mode = 0o755 must include"),
    ("engine.shm_mode", 600, r"engine\.shm_mode = 0o1130 .* did you mean 0o600\?"),
    ("claims.shm_mode", 0o444, r"claims\.shm_mode = 0o444 must include owner read\+write"),
    ("claims.shm_mode", 660, r"claims\.shm_mode = 0o1224 .* did you mean 0o660\?"),
    ("claims.max_schedulers", 0, r"claims\.max_schedulers = 0 must be in 1\.\.4096"),
    ("claims.max_schedulers", 4097, r"claims\.max_schedulers = 4097 must be in 1\.\.4096"),
    ("events.capacity", 15, r"events\.capacity = 15 must be in 16\.\.16777216"),
    (
        "ingest.max_frame_bytes",
        1023,
        r"ingest\.max_frame_bytes = 1023 must be in 1024\.\.268435456",
    ),
    ("ingest.drain_batch", 0, r"ingest\.drain_batch = 0 must be >= 1"),
    (
        "ingest.max_queue_bytes",
        2097151,
        r"ingest\.max_queue_bytes = 2097151 must be >= 2 x ingest\.max_frame_bytes \(1048576\)",
    ),
    ("ingest.max_heartbeats_per_frame", 0, r"ingest\.max_heartbeats_per_frame = 0 must be >= 1"),
    ("ingest.registration_rate", 0, r"ingest\.registration_rate = 0 must be > 0"),
    (
        "ingest.registration_rate_per_sender",
        -1.0,
        r"ingest\.registration_rate_per_sender = -1 must be > 0",
    ),
    ("ingest.registration_burst", -1, r"ingest\.registration_burst = -1 must be >= 0"),
    ("ingest.allow_nodes", ["ok", ""], r'ingest\.allow_nodes: pattern "" must be 1\.\.255 bytes'),
    (
        "ingest.bind",
        "tcp://0.0.0.0:7710",
        r'ingest\.bind = "tcp://0\.0\.0\.0:7710" can be reached from other machines and '
        r"\[ingest\.curve\] is off.*ingest\.allow_insecure = true",
    ),
    ("ingest.bind", "tcp://*:7710", r'ingest\.bind = "tcp://\*:7710" can be reached'),
    ("ingest.bind", "tcp://eth0:7710", r'ingest\.bind = "tcp://eth0:7710" can be reached'),
    ("ingest.reject_log_interval_s", 0, r"ingest\.reject_log_interval_s = 0 must be > 0"),
    (
        "ingest.bind",
        "127.0.0.1:7710",
        r'ingest\.bind = "127\.0\.0\.1:7710" must look like tcp://host:port',
    ),
    ("ingest.bind", "tcp://127.0.0.1", r'ingest\.bind = "tcp://127\.0\.0\.1" must look like'),
    ("ingest.bind", "tcp://127.0.0.1:0", r'ingest\.bind = "tcp://127\.0\.0\.1:0" must look like'),
    ("ingest.bind", "tcp://host:65536", r'ingest\.bind = "tcp://host:65536" must look like'),
    ("ingest.bind", "http://example:80", r'ingest\.bind = "http://example:80" must look like'),
    ("ingest.bind", "ipc://", r'ingest\.bind = "ipc://" must look like'),
    ("ingest.bind", "inproc://", r'ingest\.bind = "inproc://" must look like'),
    ("ingest.bind", "", r'ingest\.bind = "" must look like'),
    (
        "ingest.curve.server_secret_key_file",
        "/etc/shm/server.key_secret",
        r'ingest\.curve\.server_secret_key_file = "/etc/shm/server\.key_secret" is set but '
        r"ingest\.curve\.authorized_keys_dir is empty",
    ),
    (
        "ingest.curve.authorized_keys_dir",
        "/etc/shm/clients",
        r'ingest\.curve\.authorized_keys_dir = "/etc/shm/clients" is set but '
        r"ingest\.curve\.server_secret_key_file is empty",
    ),
]


@pytest.mark.parametrize("key, value, pattern", RANGE_ERRORS)
def test_range_errors(key, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        Config.from_dict(nested({key: value}))


def test_core_weights_all_zero():
    # core = sum(w*g)/sum(w) over the terms a node has; cpu, mem, wait and
    # success are always there, so 0 + 0 + 0 + 0 would make the denominator
    # 0 for a node without optional metrics (when P_i = 0, k1*P_i adds nothing).
    bad = {
        "score.weights.cpu": 0,
        "score.weights.mem": 0.0,
        "score.weights.wait": 0,
        "score.weights.success": 0,
    }
    with pytest.raises(
        ConfigError,
        match=r"score\.weights\.cpu \(0\) \+ score\.weights\.mem \(0\) \+ "
        r"score\.weights\.wait \(0\) \+ score\.weights\.success \(0\) must be > 0",
    ):
        Config.from_dict(nested(bad))


@pytest.mark.parametrize("positive", ["cpu", "mem", "wait", "success"])
def test_core_weights_one_positive_is_enough(positive):
    zero = {f"score.weights.{n}": 0 for n in ("cpu", "mem", "wait", "success")}
    cfg = Config.from_dict(nested({**zero, f"score.weights.{positive}": 0.5}))
    assert getattr(cfg.score.weights, positive) == 0.5


def test_optional_weights_alone_are_not_enough():
    # io, rate and tail are scored only for nodes that have them.
    zero = {f"score.weights.{n}": 0 for n in ("cpu", "mem", "wait", "success")}
    with pytest.raises(ConfigError, match=r"must be > 0: these terms are scored for every node"):
        Config.from_dict(
            nested(
                {**zero, "score.weights.io": 1, "score.weights.rate": 1, "score.weights.tail": 1}
            )
        )


@pytest.mark.parametrize(
    "dotted",
    [
        {"score.max_cpu": 1, "score.max_mem": 1, "score.alpha_queue": 1, "score.beta": 1},
        {"score.limit_critical": 0, "score.t_overloaded": 0, "score.delta": 0},
        {"score.max_quarantined_fraction": 0},
        {"score.max_quarantined_fraction": 1},
        {"score.suspect_after_s": 0, "score.dead_after_s": 0.001},
        {"score.k1": 0, "score.k2": 0},
        {
            "score.weights.io": 0,
            "score.weights.rate": 0,
            "score.weights.success": 0,
            "score.weights.tail": 0,
        },
        {
            "score.error_half_life_s": 1e-3,
            "score.ejection_s": 1e-3,
            "score.max_consecutive_errors": 1,
            "score.min_requests": 1,
        },
        {"engine.capacity": 1},
        {"engine.capacity": 16_777_216},
        {"engine.shm_mode": 0o640},
        {"engine.shm_mode": 0o644},
        {"engine.shm_mode": "0640"},
        {"claims.shm_mode": 0o660},
        {"claims.shm_mode": 0o664},
        {"engine.shm_mode": "0o644"},
        {"engine.shm_mode": "600"},
        {"engine.restart_backoff_min_s": 10, "engine.restart_backoff_max_s": 10},
        {"ingest.max_frame_bytes": 1024, "ingest.max_queue_bytes": 2048},
        {"ingest.max_queue_bytes": 2 << 20},
        {"ingest.max_heartbeats_per_frame": 1},
        {"ingest.registration_burst": 0, "ingest.registration_burst_per_sender": 0},
        {"ingest.allow_nodes": ["web-*", "db-[0-9]", "exact.id"]},
        {"ingest.bind": "tcp://*:7710", "ingest.allow_insecure": True},
        {"ingest.bind": "tcp://0.0.0.0:1", "ingest.allow_insecure": True},
        {"ingest.bind": "tcp://127.0.0.1:*"},
        {"ingest.bind": "tcp://[::1]:65535"},
        {"ingest.bind": "tcp://127.3.2.1:7710"},
        {"ingest.bind": "tcp://localhost:7710"},
        {"ingest.bind": "tcp://eth0:7710", "ingest.allow_insecure": True},
        {"ingest.bind": "ipc:///run/shm-engine/hb.sock"},
        {"ingest.bind": "inproc://heartbeats"},
        {"ingest.peer_nodes_file": "/etc/peers"},
        {
            "ingest.curve.server_secret_key_file": "/k/server.key_secret",
            "ingest.curve.authorized_keys_dir": "/k/clients",
        },
        {
            "ingest.bind": "tcp://0.0.0.0:7710",
            "ingest.curve.server_secret_key_file": "/k/server.key_secret",
            "ingest.curve.authorized_keys_dir": "/k/clients",
        },
    ],
)
def test_edge_values_accepted(dotted):
    Config.from_dict(nested(dotted))


def test_shm_mode_string_parsed_as_octal():
    assert Config.from_dict(nested({"engine.shm_mode": "0640"})).engine.shm_mode == 0o640
    assert Config.from_dict(nested({"claims.shm_mode": "0o660"})).claims.shm_mode == 0o660


def test_curve_enabled():
    assert not Config().ingest.curve.enabled
    assert CurveConfig("/k/s", "/k/c").enabled


def test_constructors_validate_too():
    with pytest.raises(ConfigError, match=r"score\.beta = 0 must be in \(0, 1\]"):
        ScoreConfig(beta=0)
    with pytest.raises(ConfigError, match=r"score\.limit_critical = 100"):
        dataclasses.replace(Config().score, limit_critical=100.0)
    with pytest.raises(ConfigError, match=r"score\.weights\.io = -1 must be >= 0"):
        Weights(io=-1)
    with pytest.raises(ConfigError, match=r"score\.weights must be a Weights, got table"):
        ScoreConfig(weights={"cpu": 1})  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Unknown sections and keys

UNKNOWN = [
    ({"score": {"bta": 0.5}}, r"unknown key score\.bta \(did you mean score\.beta\?\)"),
    (
        {"score": {"max_wait": 5}},
        r"unknown key score\.max_wait \(did you mean score\.max_wait_s\?\)",
    ),
    (
        {"score": {"weights": {"cpux": 1}}},
        r"unknown key score\.weights\.cpux \(did you mean score\.weights\.cpu\?\)",
    ),
    ({"scor": {"beta": 0.5}}, r"unknown section \[scor\] \(did you mean \[score\]\?\)"),
    (
        {"score": {"weight": {"cpu": 1}}},
        r"unknown section \[score\.weight\] \(did you mean \[score\.weights\]\?\)",
    ),
    (
        {"ingest": {"curv": {}}},
        r"unknown section \[ingest\.curv\] \(did you mean \[ingest\.curve\]\?\)",
    ),
    # The right key in the wrong section.
    ({"engine": {"beta": 0.5}}, r"unknown key engine\.beta \(did you mean score\.beta\?\)"),
    (
        {"score": {"capacity": 10}},
        r"unknown key score\.capacity \(did you mean engine\.capacity\?\)",
    ),
    ({"beta": 0.5}, r"unknown top-level key beta \(did you mean score\.beta\?\)"),
    # Nothing close: the valid names are listed.
    ({"engine": {"zzzz": 1}}, r"unknown key engine\.zzzz; valid names in \[engine\]: capacity, "),
    (
        {"xyzzy": {}},
        r"unknown section \[xyzzy\]; valid names in the file: engine, ingest, claims, "
        r"score, events, feed, http, placement, scope",
    ),
    # A section given as a scalar.
    ({"score": 5}, r"score = 5 has type integer, expected a table"),
    ({"score": {"weights": 0.2}}, r"score\.weights = 0\.2 has type float, expected a table"),
]


@pytest.mark.parametrize("data, pattern", UNKNOWN)
def test_unknown_sections_and_keys(data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        Config.from_dict(data)


RENAMED = (
    r"score\.weights\.throughput was renamed to score\.weights\.rate: in score "
    r"version 2 the throughput term became the rate term, .*; write "
    r"score\.weights\.rate = 0\.2"
)


def test_weights_throughput_is_refused_as_renamed(tmp_path):
    with pytest.raises(ConfigError, match=RENAMED):
        Config.from_dict({"score": {"weights": {"throughput": 0.2}}})
    path = tmp_path / "v1.toml"
    path.write_text("[score.weights]\ncpu = 0.3\nthroughput = 0.2\n")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ": " + RENAMED):
        load_config(path)
    with pytest.raises(ConfigError, match=RENAMED):
        with_overrides(Config(), {"score.weights.throughput": 0.2})


# --------------------------------------------------------------------------
# Files


def test_load_toml_file(tmp_path):
    path = tmp_path / "engine.toml"
    path.write_text(
        "[engine]\n"
        "capacity = 1024\n"
        "shm_mode = 0o640\n"
        "[ingest]\n"
        'bind = "ipc:///run/shm-engine/hb"\n'
        "[ingest.curve]\n"
        'server_secret_key_file = "s"\n'
        'authorized_keys_dir = "c"\n'
        "[score]\n"
        "max_queue = 200        # an int for a float key\n"
        "beta = 0.25\n"
        "[score.weights]\n"
        "cpu = 1\n"
    )
    cfg = load_config(path)
    assert cfg.engine.capacity == 1024
    assert cfg.engine.shm_mode == 0o640
    assert cfg.ingest.bind == "ipc:///run/shm-engine/hb"
    assert cfg.ingest.curve.enabled
    assert cfg.score.max_queue == 200.0 and type(cfg.score.max_queue) is float
    assert cfg.score.beta == 0.25
    assert cfg.score.weights.cpu == 1.0
    assert cfg.score.weights.mem == 0.15
    assert load_config(str(path)) == cfg


def test_load_rejects_bool_from_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[score]\nbeta = true\n")
    with pytest.raises(ConfigError, match=r"c\.toml: score\.beta = true has type boolean"):
        load_config(path)


def test_load_validation_error_names_file_and_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[score]\nlimit_critical = 120\n")
    with pytest.raises(
        ConfigError,
        match=re.escape(f"{path}: score.limit_critical = 120 must be < score.max_queue (100)"),
    ):
        load_config(path)


def test_load_missing_file_names_it(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=re.escape(f"{path}: config file not found")) as info:
        load_config(path)
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_load_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path}: cannot read config file")):
        load_config(tmp_path)


def test_load_toml_syntax_error_names_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[score\nbeta = 0.5\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: invalid TOML")) as info:
        load_config(path)
    assert isinstance(info.value.__cause__, tomllib.TOMLDecodeError)


def test_duplicate_key_is_a_toml_error(tmp_path):
    path = tmp_path / "dup.toml"
    path.write_text("[score]\nbeta = 0.5\nbeta = 0.6\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path)


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        Config.from_dict({"score": {"beta": 2}})


# --------------------------------------------------------------------------
# Rendering and round trips


def test_render_defaults_round_trip(tmp_path):
    path = tmp_path / "defaults.toml"
    path.write_text(render_defaults())
    assert load_config(path) == Config()
    assert tomllib.loads(render_defaults()) == Config().to_dict()


def test_render_defaults_comments_every_key():
    lines = render_defaults().splitlines()
    assigned = [i for i, line in enumerate(lines) if re.match(r"^[a-z_0-9]+ = ", line)]
    # placement.resources is one table: one line for its entries
    tables = {k.rsplit(".", 1)[0] for k in ALL_DEFAULTS if k.startswith("placement.resources.")}
    in_tables = [k for k in ALL_DEFAULTS if k.rsplit(".", 1)[0] in tables]
    assert len(assigned) == len(ALL_DEFAULTS) - len(in_tables) + len(tables)
    for i in assigned:
        assert lines[i - 1].startswith("# "), lines[i]
    for section in (
        "[engine]",
        "[ingest]",
        "[ingest.curve]",
        "[claims]",
        "[placement]",
        "[placement.weights]",
        "[score]",
        "[score.weights]",
        "[http]",
        "[scope]",
    ):
        assert section in lines
    assert "shm_mode = 0o600" in lines
    assert all(len(line) <= 78 for line in lines)


def test_max_queue_bytes_doc_states_the_ingest_loops_own_bound():
    """The max_queue_bytes comment promises how many drained frames the
    ingest loop holds beyond the socket's queue, and the hard limit of a
    frame; it must follow the loop's and the socket's constants."""
    from shm_engine.ingest import process as ingest

    doc = " ".join(line.removeprefix("# ") for line in render_defaults().splitlines())
    kib = ingest.RECV_COPY_MAX // 1024
    assert (
        f"at most {ingest.DRAIN_CHUNK} small frames and one above {kib} KiB, or "
        f"{ingest.LARGE_CHUNK} above {kib} KiB"
    ) in doc
    assert f"max_queue_bytes // ({ingest.HARD_LIMIT_FACTOR} x max_frame_bytes)" in doc


def test_socket_limits_derive_from_the_byte_budget():
    ic = with_overrides(
        Config(), {"ingest.max_frame_bytes": 65536, "ingest.max_queue_bytes": 10 << 20}
    ).ingest
    assert ic.max_message_bytes == 131072  # 2 x max_frame_bytes
    assert ic.queue_frames == 80  # 10 MiB // 128 KiB
    assert ic.queue_frames * ic.max_message_bytes <= ic.max_queue_bytes


def test_render_non_default_round_trip():
    cfg = with_overrides(
        Config(),
        {
            "score.beta": 0.1 + 0.2,  # 0.30000000000000004 must survive exactly
            "score.max_queue": 1e6,
            "engine.shm_mode": 0o640,
            "ingest.bind": 'ipc:///run/a "quoted" \\ path\t',
            "ingest.curve.server_secret_key_file": "k/é.key_secret",
            "ingest.curve.authorized_keys_dir": "k/clients",
        },
    )
    assert Config.from_dict(tomllib.loads(render_config(cfg))) == cfg


def test_to_dict_from_dict_round_trip():
    assert Config.from_dict(Config().to_dict()) == Config()


finite_weight = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    weights=st.tuples(*[finite_weight] * 7).filter(lambda w: w[0] + w[1] + w[3] + w[5] > 0),
    beta=st.floats(min_value=1e-12, max_value=1.0),
    max_queue=st.floats(min_value=1e-6, max_value=1e12),
    frac=st.floats(min_value=0.0, max_value=1.0),
)
def test_render_round_trip_property(weights, beta, max_queue, frac):
    cfg = with_overrides(
        Config(),
        {
            **{f"score.weights.{n}": w for n, w in zip(kp.WEIGHT_NAMES, weights, strict=True)},
            "score.beta": beta,
            "score.max_queue": max_queue,
            "score.limit_critical": max_queue / 2,
            "score.max_quarantined_fraction": frac,
        },
    )
    back = Config.from_dict(tomllib.loads(render_config(cfg)))
    assert back == cfg
    assert np.array_equal(back.to_params(), cfg.to_params())


# --------------------------------------------------------------------------
# Overrides


def test_with_overrides():
    cfg = with_overrides(
        Config(), {"score.beta": 0.7, "score.weights.cpu": 0.3, "engine.capacity": 64}
    )
    assert (cfg.score.beta, cfg.score.weights.cpu, cfg.engine.capacity) == (0.7, 0.3, 64)
    assert cfg.score.alpha_queue == 0.3
    assert Config().score.beta == 0.5  # the original is untouched


@pytest.mark.parametrize(
    "dotted, pattern",
    [
        ({"score.bta": 0.7}, r"unknown key score\.bta \(did you mean score\.beta\?\)"),
        ({"scor.beta": 0.7}, r"unknown section \[scor\] \(did you mean \[score\]\?\)"),
        ({"score.beta.x": 1}, r"override score\.beta\.x: score\.beta is a key, not a section"),
        ({"score..beta": 1}, r"override key 'score\.\.beta' is malformed"),
        ({"score.beta": 2}, r"score\.beta = 2 must be in \(0, 1\]"),
        ({"score.max_queue": 40}, r"score\.limit_critical = 50 must be < score\.max_queue \(40\)"),
    ],
)
def test_with_overrides_errors(dotted, pattern):
    with pytest.raises(ConfigError, match=pattern):
        with_overrides(Config(), dotted)


@pytest.mark.parametrize(
    "item, expected",
    [
        ("score.beta=0.7", ("score.beta", 0.7)),
        ("score.beta = 1", ("score.beta", 1)),
        ("score.beta=true", ("score.beta", True)),
        ('ingest.bind="tcp://*:1"', ("ingest.bind", "tcp://*:1")),
        ("ingest.bind=tcp://*:1", ("ingest.bind", "tcp://*:1")),
        ("engine.shm_mode=0640", ("engine.shm_mode", "0640")),
        ("engine.shm_mode=0o640", ("engine.shm_mode", 0o640)),
    ],
)
def test_parse_override(item, expected):
    assert parse_override(item) == expected


def test_parse_override_then_apply():
    cfg = with_overrides(
        Config(), dict(map(parse_override, ["engine.shm_mode=0640", "score.max_queue=200"]))
    )
    assert cfg.engine.shm_mode == 0o640 and cfg.score.max_queue == 200.0


def test_parse_override_needs_equals():
    with pytest.raises(
        ConfigError, match=r"override 'score\.beta' must look like section\.key=value"
    ):
        parse_override("score.beta")


def test_kernel_default_vector_equals_the_configuration_defaults():
    # kernels.defaults is the one table of score defaults: the configuration
    # reads it, and tests and warm-up use it without a config file.
    from kernels import default_params

    np.testing.assert_array_equal(default_params(), Config().to_params())


def test_configuration_reads_its_score_defaults_from_the_kernels_table():
    from kernels.defaults import DEFAULTS

    flat = flatten(Config().to_dict())
    for name, value in DEFAULTS.items():
        key = f"engine.{name}" if name == "tick_interval_ms" else f"score.{name}"
        assert flat[key] == value, key
