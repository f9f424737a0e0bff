"""Tests of shm_engine.core.scope (zone scope escalation) and its ``[scope]``
configuration: the ramps with the arithmetic shown, the sample rules
(min samples, window, age, the 2 s re-evaluation on an injected clock),
per-job levels and their shares over many draws, reload, and config errors
naming key and value."""

import math

import numpy as np
import pytest

from shm_engine.core.config import Config, ScopeConfig, with_overrides
from shm_engine.core.errors import ConfigError
from shm_engine.core.scope import (
    EVERY,
    NEIGHBOURS,
    OWN,
    ScopePolicy,
    escalation_share,
    job_draw,
    quantile,
)

RING = ("a=b,d", "b=a,c", "c=b,d", "d=c,a")


class Clock:
    def __init__(self, t=0.0):
        self.t = t

    def __call__(self):
        return self.t


def feed(policy, zone, durations, now=0.0):
    for d in durations:
        assert policy.observe(zone, d, now)


def ratio_of(values):
    """P95 / P50 the way the rule computes it, via numpy as a cross-check."""
    return float(np.percentile(values, 95) / np.percentile(values, 50))


# --------------------------------------------------------------------------
# The ramps


@pytest.mark.parametrize(
    "ratio, wide, every",
    [
        (1.0, 0.0, 0.0),  # no tail at all
        (1.5, 0.0, 0.0),  # at the federated soft threshold: not yet
        (1.7, 0.2, 0.0),  # (1.7 - 1.5) / (2.5 - 1.5) = 0.2; centralized starts at 1.7
        (2.0, 0.5, 0.3),  # (2.0 - 1.5) / 1.0 = 0.5; (2.0 - 1.7) / (2.7 - 1.7) = 0.3
        (2.5, 1.0, 0.8),  # federated hard; (2.5 - 1.7) / 1.0 = 0.8
        (2.7, 1.0, 1.0),  # centralized hard
        (9.0, 1.0, 1.0),  # beyond: all
    ],
)
def test_default_ramps(ratio, wide, every):
    cfg = ScopeConfig()
    assert escalation_share(ratio, cfg.federated_soft, cfg.federated_hard) == pytest.approx(wide)
    assert escalation_share(ratio, cfg.centralized_soft, cfg.centralized_hard) == pytest.approx(
        every
    )


def test_quantile_interpolates_like_numpy():
    xs = [1.0, 2.0, 3.0, 4.0, 10.0]
    # q = 0.95: position 0.95 * 4 = 3.8 -> 4 + 0.8 * (10 - 4) = 8.8
    assert quantile(xs, 0.95) == pytest.approx(8.8)
    assert quantile(xs, 0.5) == 3.0
    assert quantile([7.0], 0.95) == 7.0
    rng = np.random.default_rng(1)
    ys = sorted(rng.lognormal(0, 1, 37).tolist())
    assert quantile(ys, 0.95) == pytest.approx(np.percentile(ys, 95))


# --------------------------------------------------------------------------
# Samples and evaluation

# Ten durations: 1 .. 9 and 21.  P50 at position 4.5: 5.5; P95 at position
# 8.55: 9 + 0.55 * (21 - 9) = 15.6; ratio 15.6 / 5.5 = 2.836... (beyond both hards).
TEN = [1, 2, 3, 4, 5, 6, 7, 8, 9, 21]


def test_ratio_needs_min_samples_then_escalates_all():
    p = ScopePolicy(ScopeConfig(neighbours=RING), clock=Clock())
    feed(p, "a", TEN[:9])
    assert p.shares("a", 0.0) == (0.0, 0.0, None)  # 9 < 10 samples: unknown, not escalated
    p.observe("a", TEN[9], 0.0)
    s = p.shares("a", 2.0)  # 2 s later: re-evaluated
    assert s.ratio == pytest.approx(15.6 / 5.5) == pytest.approx(ratio_of(TEN))
    assert s.wide == 1.0 and s.every == 1.0
    assert p.allowed_zones("a", 0.999, 2.0) is None  # every zone
    assert p.level("b", 0.0, 2.0) == OWN  # other zones have no samples


def test_re_evaluated_every_interval_only():
    clock = Clock(0.0)
    p = ScopePolicy(ScopeConfig(), clock=clock)
    feed(p, "a", [1.0] * 10, 0.0)
    assert p.shares("a").ratio == 1.0  # first call evaluates at t = 0
    feed(p, "a", [100.0] * 10, 0.5)  # P95/P50 now (100 / 50.5)
    clock.t = 1.99
    assert p.shares("a").ratio == 1.0  # within 2 s: the old evaluation holds
    clock.t = 2.0
    # 20 samples, ten 1s and ten 100s: P50 at position 9.5 = 1 + 0.5 * 99 = 50.5,
    # P95 at position 18.05 = 100: ratio 1.98 -> wide 0.48, every 0.28
    s = p.shares("a")
    assert s.ratio == pytest.approx(100 / 50.5)
    assert s.wide == pytest.approx((100 / 50.5 - 1.5) / 1.0)
    assert s.every == pytest.approx((100 / 50.5 - 1.7) / 1.0)


def test_window_keeps_the_latest_and_old_samples_age_out():
    cfg = ScopeConfig(window=10, min_samples=10, max_age_s=30.0)
    p = ScopePolicy(cfg, clock=Clock())
    feed(p, "a", [1, 1, 1, 1, 1, 1, 1, 1, 1, 50], 0.0)
    assert p.shares("a", 0.0).wide == 1.0
    feed(p, "a", [2.0] * 10, 10.0)  # the window of 10 forgets the first ten
    assert p.shares("a", 12.0).ratio == 1.0
    # 30 s after the newest sample everything aged out: unknown, back to own zone
    assert p.shares("a", 40.0 + 1e-9) == (0.0, 0.0, None)


def test_recovery_brings_jobs_back():
    clock = Clock()
    p = ScopePolicy(ScopeConfig(neighbours=RING), clock=clock)
    feed(p, "a", TEN, 0.0)
    assert p.allowed_zones("a", 0.5, 0.0) is None
    feed(p, "a", [1.0] * 256, 5.0)  # a full window of healthy outcomes
    assert p.allowed_zones("a", 0.5, 6.0) == ("a",)


def test_heartbeats_count_when_outcomes_are_too_few():
    p = ScopePolicy(ScopeConfig(neighbours=RING), clock=Clock())
    for _ in range(10):
        assert p.observe_heartbeat("c", 0.010, 0.020, 0.0)
    # mean p95 / mean p50 = 0.020 / 0.010 = 2.0 -> wide 0.5, every 0.3
    s = p.shares("c", 0.0)
    assert s == pytest.approx((0.5, 0.3, 2.0))
    feed(p, "c", [1.0] * 10, 1.0)
    assert p.shares("c", 2.0).ratio == 1.0  # outcomes, once enough, take precedence


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.observe("a", 0.0),
        lambda p: p.observe("a", -1.0),
        lambda p: p.observe("a", math.nan),
        lambda p: p.observe("a", math.inf),
        lambda p: p.observe("", 1.0),
        lambda p: p.observe("a", "1"),
        lambda p: p.observe_heartbeat("a", 2.0, 1.0),  # p95 < p50
        lambda p: p.observe_heartbeat("a", 0.0, 1.0),
        lambda p: p.observe_heartbeat("a", 1.0, math.inf),
    ],
)
def test_bad_samples_are_refused_and_kept_nowhere(call):
    p = ScopePolicy(ScopeConfig(min_samples=2), clock=Clock())
    assert call(p) is False
    assert p.shares("a", 0.0).ratio is None


def test_disabled_never_escalates():
    p = ScopePolicy(ScopeConfig(enabled=False), clock=Clock())
    feed(p, "a", TEN, 0.0)
    s = p.shares("a", 0.0)
    assert s.ratio == pytest.approx(15.6 / 5.5) and s.wide == s.every == 0.0


# --------------------------------------------------------------------------
# Per-job levels


def test_levels_split_the_draws_in_nested_shares():
    clock = Clock()
    p = ScopePolicy(ScopeConfig(neighbours=RING), clock=clock)
    # ten 1s and ten 100s: ratio 100 / 50.5 = 1.980 -> wide 0.480, every 0.280
    feed(p, "a", [1.0] * 10 + [100.0] * 10, 0.0)
    wide, every = 100 / 50.5 - 1.5, 100 / 50.5 - 1.7
    assert p.level("a", every - 1e-9) == EVERY
    assert p.level("a", every) == NEIGHBOURS
    assert p.level("a", wide - 1e-9) == NEIGHBOURS
    assert p.level("a", wide) == OWN
    assert p.zones("a", NEIGHBOURS) == ("a", "b", "d")
    assert p.zones("a", OWN) == ("a",)
    assert p.zones("zz", NEIGHBOURS) == ("zz",)  # no neighbours configured
    # over many hashed job ids the shares are the ramps' values
    levels = np.array([p.level("a", job_draw(f"job-{i}")) for i in range(20_000)])
    assert (levels == EVERY).mean() == pytest.approx(every, abs=0.01)
    assert (levels >= NEIGHBOURS).mean() == pytest.approx(wide, abs=0.01)
    assert p.allowed_zones(None, 0.0) is None


def test_job_draw_is_deterministic_and_uniform():
    assert job_draw("x") == job_draw("x") and job_draw(b"x") == job_draw("x")
    assert job_draw(1) != job_draw(2)
    u = np.array([job_draw(i) for i in range(10_000)])
    assert 0.0 <= u.min() and u.max() < 1.0
    assert np.histogram(u, bins=10, range=(0, 1))[0].min() > 900


def test_bad_draw_raises():
    p = ScopePolicy(clock=Clock())
    for u in (1.0, -0.1, math.nan):
        with pytest.raises(ValueError, match=r"draw u = .* must be in \[0, 1\)"):
            p.level("a", u)


def test_reload_keeps_samples_and_applies_new_thresholds():
    p = ScopePolicy(ScopeConfig(), clock=Clock())
    feed(p, "a", [1.0] * 10 + [100.0] * 10, 0.0)
    assert p.shares("a", 0.0).wide == pytest.approx(100 / 50.5 - 1.5)
    p.reload(ScopeConfig(federated_soft=1.0))
    # (1.980 - 1.0) / (2.5 - 1.0) = 0.653, re-evaluated at once
    assert p.shares("a", 0.1).wide == pytest.approx((100 / 50.5 - 1.0) / 1.5)
    p.reload(ScopeConfig(window=5, min_samples=5))  # the 5 newest (all 100) stay
    assert p.shares("a", 0.2).ratio == 1.0
    with pytest.raises(TypeError, match="expected a ScopeConfig"):
        p.reload(Config())  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# [scope] configuration


def test_scope_defaults_are_the_issues_numbers():
    s = Config().scope
    assert (s.federated_soft, s.federated_hard) == (1.5, 2.5)
    assert (s.centralized_soft, s.centralized_hard) == (1.7, 2.7)
    assert s.min_samples == 10 and s.interval_s == 2.0 and s.enabled
    cfg = with_overrides(Config(), {"scope.neighbours": list(RING), "scope.federated_hard": 2.6})
    assert cfg.scope.neighbour_map()["a"] == ("b", "d")


@pytest.mark.parametrize(
    "dotted, pattern",
    [
        (
            {"scope.federated_soft": 2.5},
            r"scope\.federated_soft = 2\.5 must be < "
            r"scope\.federated_hard \(2\.5\)",
        ),
        (
            {"scope.centralized_soft": 3.0},
            r"scope\.centralized_soft = 3 must be < "
            r"scope\.centralized_hard \(2\.7\)",
        ),
        (
            {"scope.centralized_soft": 1.4},
            r"scope\.centralized_soft = 1\.4 must be >= "
            r"scope\.federated_soft \(1\.5\)",
        ),
        (
            {"scope.centralized_hard": 2.4},
            r"scope\.centralized_hard = 2\.4 must be >= "
            r"scope\.federated_hard \(2\.5\)",
        ),
        ({"scope.federated_soft": 0.9}, r"scope\.federated_soft = 0\.9 must be >= 1"),
        ({"scope.min_samples": 1}, r"scope\.min_samples = 1 must be in 2\.\.256"),
        ({"scope.min_samples": 300}, r"scope\.min_samples = 300 must be in 2\.\.256"),
        ({"scope.window": 1}, r"scope\.window = 1 must be in 2\.\.1000000"),
        ({"scope.interval_s": 0}, r"scope\.interval_s = 0 must be > 0"),
        ({"scope.max_age_s": 1.0}, r"scope\.max_age_s = 1 must be >= scope\.interval_s \(2\)"),
        ({"scope.enabled": 1}, r"scope\.enabled = 1 has type integer, expected a boolean"),
        ({"scope.neighbours": ["a"]}, r'entry "a" must look like "zone=n1,n2"'),
        ({"scope.neighbours": ["a=a"]}, r'entry "a=a": zone "a" is its own neighbour'),
        ({"scope.neighbours": ["a=b", "a=c"]}, r'entry "a=c": zone "a" has an entry already'),
        ({"scope.neighbours": ["a=b,b"]}, r'entry "a=b,b": a neighbour is listed twice'),
        ({"scope.neighbours": ["a="]}, r'entry "a=": zone "" is empty'),
        ({"scope.neighbours": ["a=" + "z" * 32]}, r"is over 31 bytes of UTF-8"),
        ({"scope.neighbours": ["a= b"]}, r"has surrounding blanks"),
        ({"scope.neighbours": [3]}, r"element 3 has type integer, expected a string"),
    ],
)
def test_scope_config_errors_name_key_and_value(dotted, pattern):
    with pytest.raises(ConfigError, match=pattern):
        with_overrides(Config(), dotted)
