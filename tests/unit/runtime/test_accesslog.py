"""The access log's writer and `blaze serve`'s handler: the lines, whole, in order."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys

import pytest
from grpclib.const import Status

from blazerpc.runtime.accesslog import AccessLog, access_log
from blazerpc.runtime.loglines import LogLines


class _Writes(io.StringIO):
    """A stream that records each write, as a pipe would receive it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)


def _log_calls(handler: logging.Handler, calls: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """`calls` access lines through a fresh AccessLog whose only handler is `handler`."""
    monkeypatch.setattr(access_log, "handlers", [handler])
    monkeypatch.setattr(access_log, "propagate", False)
    monkeypatch.setattr(access_log, "level", logging.INFO)
    log = AccessLog()
    for i in range(calls):
        items = i if i % 2 else None
        peer = f"127.0.0.1:{40000 + i}" if i % 3 else None
        log.call_ended(f"model-{i}", "unary", Status.OK, 0.00012, items, peer, "grpc", f"r{i}")
    log.close()


@pytest.mark.parametrize("show_process", [False, True])
def test_lines_written_directly_are_the_lines_logging_would_write(
    show_process: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct = _Writes()
    _log_calls(LogLines(direct, show_process=show_process), 50, monkeypatch)
    through_records = _Writes()
    handler = LogLines(through_records, show_process=show_process)
    own_format = handler.formatter
    assert own_format is not None
    handler.setFormatter(logging.Formatter(own_format._fmt))  # the same format, not its own
    _log_calls(handler, 50, monkeypatch)

    assert len(direct.writes) < 5 < len(through_records.writes)  # batches against line by line
    lines = "".join(direct.writes).splitlines()
    assert lines == "".join(through_records.writes).splitlines()
    pid = f"[{os.getpid()}] " if show_process else ""
    assert lines[0] == f"INFO {pid}blazerpc.access: model-0 unary OK 0.1ms peer=- via=grpc id=r0"
    assert lines[5] == (
        f"INFO {pid}blazerpc.access: "
        "model-5 unary OK 0.1ms items=5 peer=127.0.0.1:40005 via=grpc id=r5"
    )
    assert [line.split(": ")[1].split()[0] for line in lines] == [f"model-{i}" for i in range(50)]


def test_json_lines_written_directly_are_the_json_logging_would_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    direct = _Writes()
    _log_calls(LogLines(direct, json=True), 20, monkeypatch)
    through_records = _Writes()
    handler = LogLines(through_records, json=True)
    handler.addFilter(lambda record: True)  # a filter: no longer "as made", so records
    _log_calls(handler, 20, monkeypatch)

    assert len(direct.writes) < 5 and len(through_records.writes) == 20  # batches, lines
    documents = [json.loads(line) for line in "".join(direct.writes).splitlines()]
    times = [document.pop("time") for document in documents]
    recorded = [json.loads(w) for w in through_records.writes]
    assert all(document.pop("time")[:10] == times[0][:10] for document in recorded)
    assert documents == recorded  # the same lines, but for the times of two runs
    assert documents[5] == {
        "level": "INFO",
        "logger": "blazerpc.access",
        "model": "model-5",
        "shape": "unary",
        "status": "OK",
        "duration_ms": 0.12,
        "items": 5,
        "peer": "127.0.0.1:40005",
        "transport": "grpc",
        "request_id": "r5",
    }
    assert documents[0]["peer"] is None and "items" not in documents[0]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", t) for t in times)


def test_other_records_as_json_carry_their_message_and_exception() -> None:
    stream = _Writes()
    handler = LogLines(stream, json=True, show_process=True)
    try:
        raise ValueError("weights missing")
    except ValueError:
        record = logging.LogRecord(
            "blazerpc.errors", logging.ERROR, "", 0, "model %r failed", ("m",), sys.exc_info()
        )
    handler.emit(record)
    document = json.loads(stream.writes[0])
    assert document["level"] == "ERROR" and document["pid"] == os.getpid()
    assert document["message"] == "model 'm' failed"
    assert document["exception"].endswith("ValueError: weights missing")


def test_a_batch_goes_out_in_whole_lines_of_at_most_pipe_buf(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = _Writes()
    _log_calls(LogLines(stream), 300, monkeypatch)
    assert len(stream.writes) > 1
    assert all(w.endswith("\n") and len(w.encode()) <= 4096 for w in stream.writes)
    assert len("".join(stream.writes).splitlines()) == 300


def test_a_filter_on_the_handler_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = _Writes()
    handler = LogLines(stream)
    handler.addFilter(lambda record: "model-1 " not in record.getMessage())
    _log_calls(handler, 3, monkeypatch)
    models = [line.split(": ")[1].split()[0] for line in "".join(stream.writes).splitlines()]
    assert models == ["model-0", "model-2"]


def test_other_lines_go_out_at_once_in_the_same_format() -> None:
    stream = _Writes()
    handler = LogLines(stream)
    handler.emit(logging.LogRecord("blazerpc.server", logging.INFO, "", 0, "serving", None, None))
    assert stream.writes == ["INFO blazerpc.server: serving\n"]


def test_an_apps_record_with_access_like_extras_keeps_its_message_as_json() -> None:
    stream = _Writes()
    handler = LogLines(stream, json=True)
    record = logging.LogRecord("myapp", logging.INFO, "", 0, "loaded %s", ("resnet",), None)
    record.model = "resnet"  # what `extra={"model": ...}` does
    handler.emit(record)
    assert json.loads(stream.writes[0])["message"] == "loaded resnet"
