"""A soak of the hardened edge: fuzzed bodies, normal calls and attacks against one server.

    .venv/bin/python -m bench.soak [--minutes 5] [--seed 1]

`blaze serve tests/apps/every_type.py:app` runs in its own process. For the given time this
process sends, in rounds: fuzzed bodies (random and mutated, as tests/integration/test_fuzz.py
does) on all four shapes, normal calls, and now and then an attack on a connection of its
own: a Rapid Reset burst, 70 KiB of metadata, a CONTINUATION flood, 150 streams at once.
Reported: calls by status, normal calls that failed (must be 0), the server's resident memory
at the start, each minute and the end (it must level off), and whether its log has an ERROR
or a traceback (must not).
"""

from __future__ import annotations

import argparse
import collections
import random
import subprocess
import sys
import time
from pathlib import Path

import grpc

from blazerpc.wire.protobuf import SchemaCodec
from tests.apps.every_type import app
from tests.integration.rawh2 import RawH2, grpc_message

ROOT = Path(__file__).parent.parent
SERVICE = "/fixture.types.EveryType"
CLASSES = SchemaCodec(app.schema).classes
TOTAL = CLASSES["TotalRequest"](values=1.5).SerializeToString()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _fuzzed(rng: random.Random, valid: bytes) -> bytes:
    if rng.random() < 0.5:
        return rng.randbytes(rng.randrange(0, 256))
    body = bytearray(valid)
    for _ in range(rng.randrange(0, 4)):
        if body:
            body[rng.randrange(len(body))] = rng.randrange(256)
    return bytes(body[: rng.randrange(len(body) + 1)]) + rng.randbytes(rng.randrange(0, 8))


def _code(call: object, failures: list[str] | None = None) -> str:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as err:
        if failures is not None and len(failures) < 5:
            failures.append(f"{err.code().name}: {err.details()}")
        return str(err.code().name)
    return "OK"


def _attack(port: int, rng: random.Random) -> str:
    kind = rng.choice(["rapid reset", "big metadata", "continuation", "many streams"])
    with RawH2(port) as raw:
        if kind == "rapid reset":
            for _ in range(1000):
                raw.conn.reset_stream(raw.grpc_headers(f"{SERVICE}/PredictTotal"))
                if raw.closed_by_server:
                    break
        elif kind == "big metadata":
            stream = raw.grpc_headers(f"{SERVICE}/PredictTotal", ("x-blob", "b" * 70_000))
            raw.data(stream, grpc_message(TOTAL), end_stream=True)
            raw.answer(stream)
        elif kind == "continuation":
            import hyperframe.frame as frames

            stream = raw.conn.get_next_available_stream_id()
            raw.sock.sendall(frames.HeadersFrame(stream, data=b"\x82").serialize())
            block = frames.ContinuationFrame(stream, data=b"\x00" * 16000).serialize()
            try:
                for _ in range(100):
                    raw.sock.sendall(block)
            except OSError:
                pass
        else:
            streams = [raw.grpc_headers(f"{SERVICE}/PredictTotal") for _ in range(150)]
            for stream in streams:
                raw.data(stream, grpc_message(TOTAL), end_stream=True)
            for stream in streams:
                raw.answer(stream)
    return kind


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    command = [sys.executable, "-m", "blazerpc", "serve", "tests/apps/every_type.py:app"]
    command += ["--port", "0", "--log-level", "warning"]
    with subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as server:
        assert server.stdout is not None
        port = int(server.stdout.readline().rsplit(":", 1)[1].split(",")[0])
        rss_start = _rss_kib(server.pid)
        codes: collections.Counter[str] = collections.Counter()
        attacks: collections.Counter[str] = collections.Counter()
        normal_failures = 0
        first_failures: list[str] = []
        started = time.monotonic()
        ends = started + args.minutes * 60
        rss_by_minute = [rss_start]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            echo = channel.unary_unary(f"{SERVICE}/PredictEchoAll")
            total = channel.stream_unary(f"{SERVICE}/PredictTotal")
            boxes = channel.stream_stream(f"{SERVICE}/PredictEchoBoxes")
            while time.monotonic() < ends:
                for _ in range(50):
                    codes[_code(lambda: echo(_fuzzed(rng, b"\x08\x01"), timeout=5))] += 1
                    bodies = [TOTAL, *(_fuzzed(rng, TOTAL) for _ in range(3))]
                    codes[_code(lambda b=bodies: total(iter(b), timeout=5))] += 1
                    items = [_fuzzed(rng, b"") for _ in range(3)]
                    codes[_code(lambda i=items: list(boxes(iter(i), timeout=5)))] += 1
                    normal = _code(lambda: total(iter([TOTAL, TOTAL]), timeout=5), first_failures)
                    if normal != "OK":
                        normal_failures += 1
                attacks[_attack(port, rng)] += 1
                if time.monotonic() - started >= 60 * len(rss_by_minute):
                    rss_by_minute.append(_rss_kib(server.pid))
        rss_end = _rss_kib(server.pid)
        server.terminate()
        _, log = server.communicate(timeout=30)
    print(f"calls by status: {dict(codes)}")
    print(f"attacks: {dict(attacks)}")
    print(f"normal calls that failed: {normal_failures} {first_failures}")
    print(f"server RSS: {rss_start} KiB at the start, {rss_end} KiB at the end")
    print(f"server RSS each minute (KiB): {rss_by_minute}")
    print(f"errors in the server's log: {'ERROR' in log or 'Traceback' in log}")


if __name__ == "__main__":
    main()
