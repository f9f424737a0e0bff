"""`shm-engine keys DIR [--key-name NAME]`: make a CURVE key pair for the ingest socket.

Writes ``DIR/NAME.key`` (public key, share it) and ``DIR/NAME.key_secret``
(public + secret key, mode 0600, keep it on the machine that uses it), in the
zmq.auth certificate format that ``[ingest.curve]`` and
`clients.heartbeat.CurveKeys.from_files` load.  Run it once for the engine
(``server_secret_key_file`` = its ``.key_secret``) and once per client; copy
each client's ``.key`` into the engine's ``authorized_keys_dir``.

Refuses to overwrite an existing key file: replacing a key must be a
deliberate act (delete the old files first).
"""

from __future__ import annotations

import os
import sys

__all__ = ["cmd_keys", "make_keys"]


def make_keys(directory: str, key_name: str = "engine") -> tuple[str, str]:
    """Create the pair; returns (public file, secret file).

    Raises ValueError for a bad name, FileExistsError if either file exists,
    RuntimeError if this libzmq has no CURVE."""
    import zmq
    import zmq.auth

    if not zmq.has("curve"):
        raise RuntimeError("this libzmq has no CURVE support")
    if not key_name or "/" in key_name or key_name in (".", ".."):
        raise ValueError(f"--key-name {key_name!r} must be a plain file base name")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    public = os.path.join(directory, key_name + ".key")
    secret = os.path.join(directory, key_name + ".key_secret")
    for path in (public, secret):
        if os.path.exists(path):
            raise FileExistsError(f"{path} exists; remove it first to make a new key")
    # The secret file is written with the process umask; narrow it at once.
    old = os.umask(0o077)
    try:
        pub_file, sec_file = zmq.auth.create_certificates(directory, key_name)
    finally:
        os.umask(old)
    os.chmod(sec_file, 0o600)
    os.chmod(pub_file, 0o644)
    return pub_file, sec_file


def cmd_keys(args) -> int:
    """``shm-engine keys DIR [--key-name NAME]``."""
    try:
        public, secret = make_keys(args.directory, args.key_name)
    except (ValueError, FileExistsError, RuntimeError, OSError) as err:
        print(f"shm-engine keys: {err}", file=sys.stderr)
        return 2
    print(f"public key  {public}")
    print(f"secret key  {secret} (mode 0600)")
    return 0
