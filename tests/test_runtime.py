"""The log line every engine process writes, and the shared exit codes."""

import io
import re

from shm_engine.core import runtime

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARN|ERROR) [a-z_]+( \w+=\S+)*$")


def test_log_event_writes_one_line_with_milliseconds_and_fields_in_order():
    out = io.StringIO()
    runtime.log_event("WARN", "child_exited", stream=out, role="ticker", pid=42, code=78)
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    assert LINE.match(text.rstrip("\n")), text
    assert text.rstrip("\n").endswith(" WARN child_exited role=ticker pid=42 code=78")


def test_log_event_defaults_to_the_current_stderr(capsys):
    runtime.log_event("INFO", "ingest_started")
    err = capsys.readouterr().err
    assert LINE.match(err.rstrip("\n")), err


def test_log_event_on_a_closed_stream_does_not_raise():
    out = io.StringIO()
    out.close()
    runtime.log_event("ERROR", "ingest_bind_failed", stream=out, endpoint="tcp://x")


def test_the_fatal_exit_code_is_ex_config():
    assert (runtime.EXIT_OK, runtime.EXIT_FAILED, runtime.EXIT_FATAL) == (0, 1, 78)
