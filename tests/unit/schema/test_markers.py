"""What users put in annotations: Batching's knobs and Field's numbers, checked when made."""

from __future__ import annotations

import pytest

from blazerpc import DefinitionError, Field
from blazerpc.schema.markers import Batching


@pytest.mark.parametrize(
    ("knobs", "expected"),
    [
        ({"max_size": 0}, "Batching(max_size=0): max_size is a whole number of at least 1"),
        ({"max_size": True}, "Batching(max_size=True)"),
        ({"max_queue": -1}, "Batching(max_queue=-1)"),
        ({"max_concurrent": 0}, "Batching(max_concurrent=0)"),
        ({"max_wait_s": -0.001}, "Batching(max_wait_s=-0.001): the wait is in seconds"),
        ({"max_wait_s": 120}, "Batching(max_wait_s=120)"),
    ],
)
def test_bad_knob_values_are_refused(knobs: dict[str, object], expected: str) -> None:
    with pytest.raises(DefinitionError) as err:
        Batching(**knobs)  # type: ignore[arg-type]
    assert expected in str(err.value)


@pytest.mark.parametrize("number", [0, 19500, 2**29, True])
def test_an_impossible_pin_is_refused(number: int) -> None:
    with pytest.raises(DefinitionError, match="a protobuf field number is a whole number"):
        Field(number)
