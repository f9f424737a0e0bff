"""``[feed]``: each refusal names the key and the value."""

import pytest

from shm_engine.core.config import Config, ConfigError, with_overrides


@pytest.mark.parametrize(
    "over, match",
    [
        (
            {"feed.bind": "udp://127.0.0.1:1"},
            r"feed\.bind = \"udp://127\.0\.0\.1:1\" must look like",
        ),
        ({"feed.bind": "ipc:///tmp/x"}, r"feed\.bind .* must look like tcp://"),
        (
            {"feed.bind": "tcp://0.0.0.0:7711"},
            r"feed\.bind = \"tcp://0\.0\.0\.0:7711\" can be reached",
        ),
        (
            {"feed.feedback_bind": "tcp://127.0.0.1:7712"},
            r"feed\.feedback_bind .* needs feed\.bind",
        ),
        (
            {"feed.bind": "tcp://127.0.0.1:7711", "feed.feedback_bind": "tcp://127.0.0.1:*"},
            r"feed\.feedback_bind .* needs a fixed port",
        ),
        ({"feed.full_every": 0}, r"feed\.full_every = 0 must be >= 1"),
        ({"feed.mirror_timeout_s": 0.5}, r"feed\.mirror_timeout_s = 0\.5 must be >= 1"),
        (
            {"feed.curve.server_secret_key_file": "k"},
            r"feed\.curve\.server_secret_key_file .* set both",
        ),
    ],
)
def test_bad_feed_settings_are_refused_by_name(over, match):
    with pytest.raises(ConfigError, match=match):
        with_overrides(Config(), over)


def test_feed_is_off_by_default_and_on_with_a_bind():
    assert not Config().feed.enabled
    on = with_overrides(Config(), {"feed.bind": "tcp://127.0.0.1:*", "feed.allow_insecure": False})
    assert on.feed.enabled
    wide = with_overrides(
        Config(), {"feed.bind": "tcp://0.0.0.0:7711", "feed.allow_insecure": True}
    )
    assert wide.feed.bind == "tcp://0.0.0.0:7711"
