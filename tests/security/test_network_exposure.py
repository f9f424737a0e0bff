"""Network exposure: no heartbeat port open to other machines without CURVE.

The attack (issue 12): ``bind = "tcp://0.0.0.0:7710"`` without CURVE was
accepted, so anyone who could reach the port could speak for any node.
Now such a configuration is refused, naming ``ingest.bind``, unless
``[ingest] allow_insecure = true`` says so; ``run`` refuses it before it
creates anything.  The mode the ingest runs in (loopback, insecure or
curve) is decided on the address it actually bound, and shown by status.
"""

from __future__ import annotations

import pytest
import zmq

from shm_engine.core.config import Config, with_overrides
from shm_engine.ingest.admission import MODE_CURVE, MODE_INSECURE, MODE_LOOPBACK, Admission
from shm_engine.ingest.process import close_socket, open_socket
from shm_engine.ops.keys import make_keys
from support.engine import cli, free_port, segment_exists, write_config


@pytest.mark.parametrize("host", ["0.0.0.0", "*", "[::]", "eth0"])
def test_run_refuses_a_public_bind_without_curve(shm_name, tmp_path, host):
    config = write_config(tmp_path / "e.toml", free_port())
    config.write_text(config.read_text().replace("tcp://127.0.0.1:", f"tcp://{host}:"))
    out = cli("run", "--name", shm_name, "--config", str(config))
    assert out.returncode == 2
    assert f'ingest.bind = "tcp://{host}:' in out.stderr
    assert "ingest.allow_insecure = true" in out.stderr
    assert not segment_exists(shm_name)


def _mode(config: Config) -> int:
    ctx = zmq.Context()
    sock, zap, mode, why = open_socket(ctx, config, Admission(config.ingest, keys={}))
    close_socket(sock, zap)
    ctx.term()
    assert sock is not None, why
    return mode


def test_the_mode_follows_the_bound_address(tmp_path):
    base = Config()
    assert _mode(with_overrides(base, {"ingest.bind": "tcp://127.0.0.1:*"})) == MODE_LOOPBACK
    assert _mode(with_overrides(base, {"ingest.bind": "tcp://localhost:*"})) == MODE_LOOPBACK
    assert _mode(with_overrides(base, {"ingest.bind": f"ipc://{tmp_path}/hb"})) == MODE_LOOPBACK
    assert (
        _mode(
            with_overrides(base, {"ingest.bind": "tcp://0.0.0.0:*", "ingest.allow_insecure": True})
        )
        == MODE_INSECURE
    )
    if zmq.has("curve"):
        _pub, secret = make_keys(str(tmp_path / "k"), "engine")
        curve = with_overrides(
            base,
            {
                "ingest.bind": "tcp://127.0.0.1:*",
                "ingest.curve.server_secret_key_file": secret,
                "ingest.curve.authorized_keys_dir": str(tmp_path),
            },
        )
        assert _mode(curve) == MODE_CURVE
