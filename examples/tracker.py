"""A bidirectional stream with state: an object tracker, like OpenVINO Model Server's streams.

Each frame's detections go in; the same objects come back with track ids that stay stable for
the life of the stream. The generator's locals are the stream's state: two streams never share
tracks.

    blaze proto examples/tracker.py:app
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import msgspec

from blazerpc import BlazeApp

app = BlazeApp()


class Point(msgspec.Struct, frozen=True):
    """The centre of one detected object."""

    x: float
    y: float


class Frame(msgspec.Struct, frozen=True):
    """One video frame's detections."""

    detections: list[Point]
    max_distance: float = 50.0


class Track(msgspec.Struct, frozen=True):
    """An object with the id it keeps from frame to frame."""

    track_id: int
    x: float
    y: float
    age: int


class Tracks(msgspec.Struct, frozen=True):
    """The tracker's answer for one frame."""

    frame: int
    tracks: list[Track]


@app.model("track")
async def track(frames: AsyncIterator[Frame]) -> AsyncIterator[Tracks]:
    """Give each detection the id of the nearest track from the previous frame, or a new id."""
    live: dict[int, Track] = {}
    next_id = 1
    frame_number = 0
    async for frame in frames:
        frame_number += 1
        matched: dict[int, Track] = {}
        for point in frame.detections:
            previous = _nearest(point, live, frame.max_distance, taken=matched)
            if previous is None:
                matched[next_id] = Track(next_id, point.x, point.y, age=1)
                next_id += 1
            else:
                matched[previous.track_id] = Track(
                    previous.track_id, point.x, point.y, age=previous.age + 1
                )
        live = matched
        yield Tracks(frame=frame_number, tracks=list(live.values()))


def _nearest(
    point: Point, live: dict[int, Track], max_distance: float, taken: dict[int, Track]
) -> Track | None:
    candidates = [
        (math.dist((point.x, point.y), (t.x, t.y)), t)
        for t in live.values()
        if t.track_id not in taken
    ]
    if not candidates:
        return None
    distance, best = min(candidates, key=lambda pair: pair[0])
    return best if distance <= max_distance else None
