"""A stock grpcio client, built from `blaze proto` output: run in its own process by the tests.

Usage: python calls.py STUBS_DIR PORT SCENARIO. Prints one JSON document with what it saw.
The stubs are imported in a separate process because every example app's schema is the file
`blazerpc.proto`, and one process can hold only one file of that name.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any


def main() -> None:
    stubs, port, scenario = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    sys.path.insert(0, stubs)
    import blazerpc_pb2 as pb  # type: ignore[import-not-found]  # generated at test time
    import blazerpc_pb2_grpc as pb_grpc  # type: ignore[import-not-found]  # generated at test time
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        print(json.dumps(SCENARIOS[scenario](pb, stub, grpc)))


def chat(pb: Any, stub: Any, grpc: Any) -> dict[str, Any]:
    tokens = [
        r.result
        for r in stub.PredictGenerate(
            pb.GenerateRequest(prompt="a b c d", max_tokens=3), timeout=10
        )
    ]
    try:
        list(stub.PredictGenerate(pb.GenerateRequest(), timeout=10))
        missing = "OK"
    except grpc.RpcError as err:
        missing = f"{err.code().name}: {err.details()}"
    return {"tokens": tokens, "missing_prompt": missing}


def detect(pb: Any, stub: Any, grpc: Any) -> dict[str, Any]:
    reply = stub.PredictDetect(pb.DetectRequest(image=b"cat.jpg", threshold=0.0), timeout=10)
    return {"boxes": [[b.x, b.y, b.score, b.label, b.HasField("label")] for b in reply.result]}


def transcribe(pb: Any, stub: Any, grpc: Any) -> dict[str, Any]:
    chunks = (pb.TranscribeRequest(audio=c) for c in (b"hel", b"lo"))
    reply = stub.PredictTranscribe(chunks, timeout=10)
    return {"text": reply.result.text, "chunks": reply.result.chunks}


def tracker(pb: Any, stub: Any, grpc: Any) -> dict[str, Any]:
    def frames() -> Iterator[Any]:
        for points in ([(0.0, 0.0)], [(1.0, 1.0), (50.0, 50.0)]):
            detections = [pb.Point(x=x, y=y) for x, y in points]
            yield pb.TrackRequest(frames=pb.Frame(detections=detections))

    answers = [
        [(t.track_id, t.age) for t in reply.result.tracks]
        for reply in stub.PredictTrack(frames(), timeout=10)
    ]
    return {"answers": answers}


def ray_models(pb: Any, stub: Any, grpc: Any) -> dict[str, Any]:
    """tests/apps/ray_models.py, served from Ray replicas: three shapes and a pid."""
    words = stub.PredictTokens(pb.TokensRequest(prompt="the quick brown fox", max_tokens=3))
    numbers = (pb.TotalRequest(numbers=n) for n in (1, 2, 3))
    running = stub.PredictRunning((pb.RunningRequest(numbers=n) for n in (1, 2, 3)), timeout=10)
    return {
        "tokens": [r.result for r in words],
        "total": stub.PredictTotal(numbers, timeout=10).result,
        "running": [r.result for r in running],
        "whoami_is_int": isinstance(stub.PredictWhoami(pb.WhoamiRequest(), timeout=10).result, int),
    }


SCENARIOS = {
    "chat": chat,
    "detect": detect,
    "transcribe": transcribe,
    "tracker": tracker,
    "ray_models": ray_models,
}

if __name__ == "__main__":
    main()
