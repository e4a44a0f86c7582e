"""Field numbers survive every edit: reorder, add, remove, re-add, pin; breaking changes listed."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated

import pytest

from blazerpc import BlazeApp, DefinitionError, Field
from blazerpc.schema.lockfile import breaking_changes, lock_of, read_lock, write_lock
from blazerpc.target import load_app
from blazerpc.wire.proto_text import render_proto


def _numbers(app: BlazeApp, message: str) -> dict[str, int]:
    spec = next(m for m in app.schema.messages if m.name == message)
    return {field.name: field.number for field in spec.fields}


def _publish(app: BlazeApp) -> None:
    assert app.lock_path is not None
    write_lock(app.lock_path, lock_of(app.schema))


def _v1(lock: Path) -> BlazeApp:
    app = BlazeApp(lock=lock)

    @app.model("score")
    def score(text: str, top_k: int = 5, threshold: float = 0.5) -> float:
        return 0.0

    return app


def test_without_a_lock_fields_are_numbered_in_parameter_order(tmp_path: Path) -> None:
    assert _numbers(_v1(tmp_path / "app.blaze.lock"), "ScoreRequest") == {
        "text": 1,
        "top_k": 2,
        "threshold": 3,
    }


def test_reordering_and_adding_keeps_every_published_number(tmp_path: Path) -> None:
    lock = tmp_path / "app.blaze.lock"
    _publish(_v1(lock))
    app = BlazeApp(lock=lock)

    @app.model("score")
    def score(
        language: str = "en", threshold: float = 0.5, text: str = "", top_k: int = 5
    ) -> float:
        return 0.0

    assert _numbers(app, "ScoreRequest") == {
        "language": 4,
        "threshold": 3,
        "text": 1,
        "top_k": 2,
    }
    locked = read_lock(lock)
    assert locked is not None
    assert breaking_changes(locked, app.schema) == []


def test_a_removed_field_is_reserved_and_a_readded_one_gets_a_new_number(tmp_path: Path) -> None:
    lock = tmp_path / "app.blaze.lock"
    _publish(_v1(lock))
    removed = BlazeApp(lock=lock)

    @removed.model("score")
    def score(text: str, threshold: float = 0.5) -> float:
        return 0.0

    assert _numbers(removed, "ScoreRequest") == {"text": 1, "threshold": 3}
    text = render_proto(removed.schema)
    assert 'reserved 2;  // removed fields: never reuse\n  reserved "top_k";' in text
    _publish(removed)

    readded = BlazeApp(lock=lock)

    @readded.model("score")
    def score_again(text: str, threshold: float = 0.5, top_k: int = 5) -> float:
        return 0.0

    assert _numbers(readded, "ScoreRequest") == {"text": 1, "threshold": 3, "top_k": 4}
    message = next(m for m in readded.schema.messages if m.name == "ScoreRequest")
    assert message.reserved_numbers == (2,) and message.reserved_names == ()


def test_a_pinned_number_wins_and_others_flow_around_it(tmp_path: Path) -> None:
    app = BlazeApp(lock=tmp_path / "app.blaze.lock")

    @app.model("pin")
    def pin(a: int, b: Annotated[int, Field(1)], c: int = 0) -> int:
        return a

    assert _numbers(app, "PinRequest") == {"a": 2, "b": 1, "c": 3}


def test_two_fields_pinned_to_one_number_fail_at_definition(tmp_path: Path) -> None:
    app = BlazeApp(lock=tmp_path / "app.blaze.lock")
    with pytest.raises(DefinitionError, match="fields 'a' and 'b' both have number 7"):

        @app.model("clash")
        def clash(a: Annotated[int, Field(7)], b: Annotated[int, Field(7)]) -> int:
            return a


def _breaking(tmp_path: Path, define: Callable[[BlazeApp], None]) -> list[str]:
    lock = tmp_path / "app.blaze.lock"
    old = BlazeApp(lock=lock)

    @old.model("score")
    def score(text: str, top_k: int = 5) -> float:
        return 0.0

    @old.model("tokens", streaming=True)
    async def tokens(n: int) -> AsyncIterator[str]:
        yield ""

    _publish(old)
    new = BlazeApp(lock=lock)
    define(new)
    locked = read_lock(lock)
    assert locked is not None
    return breaking_changes(locked, new.schema)


def test_check_lists_each_breaking_change(tmp_path: Path) -> None:
    def changed(app: BlazeApp) -> None:
        @app.model("score")
        def score(text: bytes, top_k: int = 5, lang: str = "") -> float:  # text: string -> bytes
            return 0.0

        @app.model("tokens")  # no longer streams
        def tokens(n: int) -> str:
            return ""

    assert _breaking(tmp_path, changed) == [
        "rpc PredictTokens: streaming shape changed from server_streaming to unary",
        "ScoreRequest.text: type changed from optional string to optional bytes",
    ]


def test_check_flags_a_removed_rpc_a_reused_number_and_a_new_required_field(
    tmp_path: Path,
) -> None:
    def changed(app: BlazeApp) -> None:
        @app.model("score")
        def score(text: str, lang: Annotated[str, Field(2)], user: str) -> float:
            return 0.0

    assert _breaking(tmp_path, changed) == [
        "rpc PredictTokens (model 'tokens') was removed",
        "ScoreRequest.lang: number 2 reused (it was field 'top_k')",
        "ScoreRequest.lang: new required field; old callers do not send it "
        "(give it a default or make it `| None`)",
        "ScoreRequest.user: new required field; old callers do not send it "
        "(give it a default or make it `| None`)",
    ]


def test_adding_optional_fields_and_rpcs_is_compatible(tmp_path: Path) -> None:
    def changed(app: BlazeApp) -> None:
        @app.model("tokens", streaming=True)
        async def tokens(n: int, temperature: float = 1.0) -> AsyncIterator[str]:
            yield ""

        @app.model("score")
        def score(top_k: int = 5, text: str = "", lang: str | None = None) -> float:
            return 0.0

        @app.model("embed")
        def embed(text: str) -> list[float]:
            return []

    assert _breaking(tmp_path, changed) == []


@pytest.mark.parametrize("name", ["chat", "detect", "transcribe", "tracker"])
def test_the_committed_example_locks_are_what_blaze_proto_writes(name: str) -> None:
    """Golden lock files: a diff here is a wire change, reviewed as one."""
    app = load_app(f"examples.{name}:app")
    assert app.lock_path is not None and app.lock_path.name == f"{name}.blaze.lock"
    assert read_lock(app.lock_path) == lock_of(app.schema)


class Mood(enum.IntEnum):
    UNKNOWN = 0
    HAPPY = 1
    SAD = 2


def test_enum_values_are_locked_and_removing_or_renumbering_one_breaks(tmp_path: Path) -> None:
    lock = tmp_path / "moods.blaze.lock"
    first = BlazeApp(lock=lock)

    @first.model("feel")
    def feel(mood: Mood) -> str:
        return ""

    _publish(first)
    published = read_lock(lock)
    assert published is not None
    assert published.enums == {"Mood": {"MOOD_UNKNOWN": 0, "MOOD_HAPPY": 1, "MOOD_SAD": 2}}

    class Mood2(enum.IntEnum):  # SAD is gone, HAPPY moved, 2 now means ANGRY
        UNKNOWN = 0
        HAPPY = 3
        ANGRY = 2

    Mood2.__name__ = Mood2.__qualname__ = "Mood"
    second = BlazeApp(lock=lock)

    @second.model("feel")
    def feel2(mood: Mood2) -> str:
        return ""

    locked = read_lock(lock)
    assert locked is not None
    assert breaking_changes(locked, second.schema) == [
        "enum Mood: value MOOD_HAPPY changed number from 1 to 3",
        "enum Mood: value MOOD_SAD (2) was removed; callers may still send it",
        "enum Mood: number 2 now means MOOD_ANGRY (it was MOOD_SAD)",
    ]

    class Mood3(enum.IntEnum):  # only a new value: compatible
        UNKNOWN = 0
        HAPPY = 1
        SAD = 2
        CALM = 3

    Mood3.__name__ = Mood3.__qualname__ = "Mood"
    third = BlazeApp(lock=lock)

    @third.model("feel")
    def feel3(mood: Mood3) -> str:
        return ""

    assert breaking_changes(locked, third.schema) == []
