"""Security: who may read and write scores, and what network data can do.

- The segment is created 0600 by default and ``[engine] shm_mode`` opens it
  to a group, through ``shm-engine run`` with a configuration file.
- Readers map the segment read-only: numpy refuses a write through a reader's
  arrays, and a raw store to the mapping's address kills the writer with
  SIGSEGV (run in a child process).
- Nothing from the network is unpickled or evaluated: a static check of the
  package sources; hostile-looking node ids are stored and read back verbatim.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zmq

from clients.reader import NothingPublished, ScoreReader
from shm_engine.wire.decode import decode_frame
from shm_engine.wire.encode import encode_json
from shm_engine.wire.format import RECORD_DTYPE
from support.engine import START_TIMEOUT_S, Engine, free_port, segment_exists, write_config
from support.wait import wait_until

ROOT = Path(__file__).resolve().parent.parent


def _mode(name: str) -> int:
    return stat.S_IMODE(os.stat(f"/dev/shm/{name}").st_mode)


@pytest.mark.parametrize("extra, mode", [("", 0o600), ('shm_mode = "0640"', 0o640)])
def test_segment_mode_through_run(shm_name, tmp_path, reap, extra, mode):
    config = write_config(tmp_path / "e.toml", free_port())
    if extra:  # into [engine]
        config.write_text(config.read_text().replace("[engine]\n", f"[engine]\n{extra}\n", 1))
    old = os.umask(0o022)  # the mode must not depend on the umask
    try:
        eng = Engine(shm_name, config, tmp_path, reap)
    finally:
        os.umask(old)
    eng.wait_ready()
    assert _mode(shm_name) == mode
    assert eng.stop() == 0
    assert not segment_exists(shm_name)


def _running_engine(shm_name, tmp_path, reap, nodes) -> Engine:
    port = free_port()
    eng = Engine(shm_name, write_config(tmp_path / "e.toml", port), tmp_path, reap)
    eng.wait_ready()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    frame = (
        b"["
        + b",".join(
            encode_json(dict(node=n, cpu=0.1, mem=0.1, queue=0.0, avg_job_s=1.0)) for n in nodes
        )
        + b"]"
    )
    reader = ScoreReader.attach(shm_name)
    try:

        def scored():
            sock.send(frame)
            try:
                return set(nodes) <= set(reader.snapshot().nodes)
            except NothingPublished:
                return False

        wait_until(scored, START_TIMEOUT_S, "nodes scored", period=0.05)
    finally:
        reader.close()
        sock.close(0)
        ctx.term()
    return eng


_RAW_WRITE = r"""
import ctypes, sys
import numpy as np
from clients.reader import ScoreReader
r = ScoreReader.attach(sys.argv[1])
score = r._bufs[0].views["score"]
try:
    score[0] = 0.5
except ValueError as err:
    print("numpy refused:", err, flush=True)
addr = score.__array_interface__["data"][0]
print("raw store", flush=True)
ctypes.c_double.from_address(addr).value = 0.5     # SIGSEGV: the page is PROT_READ
print("store went through", flush=True)
"""


def test_reader_mapping_is_read_only(shm_name, tmp_path, reap):
    eng = _running_engine(shm_name, tmp_path, reap, ["n1"])
    reader = ScoreReader.attach(shm_name)
    try:
        score = reader._bufs[0].views["score"]
        assert not score.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            score[0] = 1.0
        with pytest.raises(ValueError, match="WRITEABLE"):
            score.setflags(write=True)
    finally:
        reader.close()
    child = subprocess.run(
        [sys.executable, "-c", _RAW_WRITE, shm_name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert "numpy refused" in child.stdout and "raw store" in child.stdout, child.stderr
    assert "store went through" not in child.stdout
    assert child.returncode == -signal.SIGSEGV, (child.returncode, child.stderr)
    # The engine did not notice: it is still publishing.
    st = eng.status()
    assert st["children"]["ticker"]["restarts"] == 0
    assert eng.stop() == 0
    assert not segment_exists(shm_name)


# Ids that the id rule (A-Z a-z 0-9 . _ : - /) admits but that mean something
# to a shell, a path or a parser; and ids it refuses outright.
HOSTILE_IDS = [
    "../../etc/passwd",
    "/",
    "..",
    "-rf",
    "--help",
    "__import__",
    "os.system",
    "jndi:ldap://x/a",
    "file:///etc/shadow",
    "NaN",
    "null",
    "0x00",
    "-",
    "_",
]
REFUSED_IDS = [
    "$(rm -rf /)",
    "`reboot`",
    "'; DROP TABLE nodes; --",
    "{{7*7}}",
    "%s%n%x",
    "a b\\c",
    "<script>alert(1)</script>",
    "\u00fcn\u00efc\u00f8d\u00e9-\u8282",
    "\u202eevil",
    "n\u043ede",
    "tab\tid",
]


def test_hostile_node_ids_are_data(shm_name, tmp_path, reap):
    cwd_before = sorted(os.listdir(tmp_path))
    eng = _running_engine(shm_name, tmp_path, reap, HOSTILE_IDS)
    reader = ScoreReader.attach(shm_name)
    try:
        snap = reader.snapshot()
        assert sorted(n for n in snap.nodes if n) == sorted(HOSTILE_IDS)
        for n in HOSTILE_IDS:
            assert reader.score(n) > 0  # looked up by the exact string
    finally:
        reader.close()
    # Ids outside the rule are refused whole, each counted once, and the
    # nodes stay what they were.
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(eng.status()["ingest_endpoint"])
    try:
        sock.send(
            json.dumps(
                [dict(node=n, cpu=0.1, mem=0.1, queue=0.0, avg_job_s=1.0) for n in REFUSED_IDS]
            ).encode()
        )
        wait_until(
            lambda: eng.status()["ingest"]["rejected"]["bad_node_id"] >= len(REFUSED_IDS),
            30,
            "the refused ids counted",
            period=0.02,
        )
    finally:
        sock.close(0)
        ctx.term()
    st = eng.status()
    assert st["ingest"]["rejected"]["bad_node_id"] == len(REFUSED_IDS)
    assert st["nodes"]["registered"] == len(HOSTILE_IDS)
    assert eng.stop() == 0
    # Nothing was created from an id: only the engine's own log files appeared.
    assert sorted(os.listdir(tmp_path)) == sorted(
        cwd_before + ["e.toml", f"{shm_name}.out", f"{shm_name}.err"]
    )
    assert not segment_exists(shm_name)


# Builtins that turn text into code, and modules that turn bytes into objects.
# (The supervisor's importlib.import_module takes names from its own target
# table, never from the network; multiprocessing pickles only between the
# supervisor and its own children, over pipes it created.)
_DANGEROUS_CALLS = {"eval", "exec", "compile", "__import__"}
_DANGEROUS_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "marshal",
    "shelve",
    "dill",
    "cloudpickle",
    "yaml",
}


def _findings(path: Path) -> list[tuple[str, str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            for n in names:
                if n.split(".")[0] in _DANGEROUS_MODULES:
                    out.append((path.name, f"import {n}", node.lineno))
        elif isinstance(node, ast.Call):
            f = node.func
            name = (
                f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            )
            if isinstance(f, ast.Name) and name in _DANGEROUS_CALLS:
                out.append((path.name, f"{name}(", node.lineno))
            if (
                name in ("loads", "load")
                and isinstance(f, ast.Attribute)
                and isinstance(f.value, ast.Name)
                and f.value.id in _DANGEROUS_MODULES
            ):
                out.append((path.name, f"{f.value.id}.{name}(", node.lineno))
            if name == "frombuffer" and any(
                isinstance(k, ast.keyword)
                and k.arg == "dtype"
                and isinstance(k.value, ast.Constant)
                and k.value.value == "O"
                for k in node.keywords
            ):
                out.append((path.name, "object dtype from bytes", node.lineno))
    return out


def test_no_code_or_object_deserialisation_in_the_packages():
    files = [p for pkg in ("shm_engine", "clients", "kernels") for p in (ROOT / pkg).rglob("*.py")]
    assert len(files) > 20
    found = [f for p in files for f in _findings(p)]
    assert found == [], f"code/object deserialisation in the packages: {found}"


def test_static_check_catches_each_pattern(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nimport marshal\nimport yaml\nx = pickle.loads(b'')\n"
        "y = yaml.load('a')\neval('1')\nexec('x=1')\n"
    )
    got = {what for _f, what, _l in _findings(bad)}
    assert got == {
        "import pickle",
        "import marshal",
        "import yaml",
        "pickle.loads(",
        "yaml.load(",
        "eval(",
        "exec(",
    }


def test_json_decoder_builds_only_plain_data():
    # The wire decoder's output for hostile JSON holds only str/float/int/dict/list.
    frame = (
        b'{"node": "__import__.os:system", "cpu": 0.1, "mem": 0.1, "queue": 0, '
        b'"avg_job_s": 1, "labels": {"a": "$(id)"}, "resources": {"$(id)": 1}}'
    )
    d = decode_frame(frame, 1 << 20)
    assert len(d.records) == 1
    assert bytes(d.records[0]["node"]) == b"__import__.os:system"
    assert bytes(d.records[0]["res_name0"]) == b"$(id)" and d.records[0]["res_value0"] == 1.0
    assert d.labels == [b'{"a":"$(id)"}']
    assert d.records.dtype == RECORD_DTYPE and not d.records.dtype.hasobject
    assert np.all(d.records["cpu"] == 0.1)
