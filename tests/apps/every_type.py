"""A fixture app that uses every row of the type table in docs/types.md, in every shape."""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Annotated

import msgspec

from blazerpc import BlazeApp

app = BlazeApp(package="fixture.types", service="EveryType")


class Color(enum.IntEnum):
    """A plain IntEnum: its zero member comes first on the wire."""

    RED = 1
    UNSPECIFIED = 0
    DARK_BLUE = 2


class Mode(enum.Enum):
    FAST = 0
    CAREFUL = 1


class Box(msgspec.Struct):
    """A nested message, reused by several models and shared once in the schema."""

    x: float
    y: float
    label: str | None = None


@dataclasses.dataclass
class Point:
    lat: float
    lon: float = 0.0


class Node(msgspec.Struct):
    """A recursive message: children and an optional parent end the recursion."""

    value: int
    children: list[Node] = []
    parent: Node | None = None


class Everything(msgspec.Struct):
    count: int
    ratio: float
    flag: bool
    name: str
    blob: bytes
    scores: list[float]
    ids: list[int]
    flags: list[bool]
    names: list[str]
    blobs: list[bytes]
    boxes: list[Box]
    labels: dict[str, int]
    by_id: dict[int, Box]
    color: Color
    colors: list[Color]
    when: datetime.datetime
    took: datetime.timedelta
    point: Point
    matrix: list[list[float]]
    groups: dict[str, list[str]]
    cube: list[list[list[int]]]
    maybe: int | None = None
    bounded: Annotated[int, msgspec.Meta(ge=1, le=10)] = 5
    code: Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")] | None = None


@app.model("echo-all")
def echo_all(
    value: Everything,
    count: int,
    ratio: float = 0.5,
    flag: bool = False,
    name: str = "anon",
    blob: bytes = b"",
    scores: list[float] = [],  # noqa: B006 - the default is never mutated
    labels: dict[str, int] = {},  # noqa: B006 - the default is never mutated
    ids_by_name: dict[int, str] = {},  # noqa: B006 - the default is never mutated
    color: Color = Color.RED,
    mode: Mode = Mode.FAST,
    when: datetime.datetime | None = None,
    took: datetime.timedelta | None = None,
    box: Box | None = None,
    point: Point | None = None,
    tree: Node | None = None,
    top_k: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10,
) -> Everything:
    """Return the first parameter unchanged."""
    return value


@app.model("boxes")
async def boxes(image: bytes) -> list[Box]:
    return [Box(x=0, y=0)]


@app.model("maybe")
def maybe(text: str | None = None) -> float | None:
    return None if text is None else float(len(text))


@app.model("matrix")
def matrix(rows: int) -> list[list[float]]:
    return [[float(r)] * rows for r in range(rows)]


@app.model("nothing")
async def nothing(note: str) -> None:
    """A model run for its effect: the response has no fields."""


@app.model("ticks", streaming=True)
async def ticks(n: int) -> AsyncGenerator[datetime.datetime, None]:
    for i in range(n):
        yield datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(seconds=i)


@app.model("count.up")
def count_up(n: int) -> Iterator[int]:
    yield from range(n)


@app.model("total")
async def total(values: AsyncIterator[float]) -> float:
    return sum([v async for v in values])


@app.model("sync_total")
def sync_total(values: Iterator[int]) -> int:
    return sum(values)


@app.model("echo-boxes")
async def echo_boxes(boxes: AsyncIterator[Box]) -> AsyncIterator[Box]:
    async for box in boxes:
        yield box


@app.model("colors")
async def colors(color: Color) -> str:
    return color.name
