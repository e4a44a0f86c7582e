"""What users put in annotations: Batching's knobs and Field's numbers, checked when made."""

from __future__ import annotations

import pytest

from blazerpc import BlazeApp, DefinitionError, Field, Placement
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


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"replicas": 0}, "Placement(replicas=0): replicas is a whole number of at least 1"),
        ({"replicas": True}, "Placement(replicas=True)"),
        ({"min_replicas": -1}, "Placement(min_replicas=-1): min_replicas is a whole number"),
        ({"num_cpus": -0.5}, "Placement(num_cpus=-0.5): num_cpus is a number of at least 0"),
        ({"num_gpus": "1"}, "Placement(num_gpus='1')"),
        ({"target_ongoing_requests": 0}, "target_ongoing_requests=0): autoscaling aims"),
        (
            {"replicas": 2, "max_replicas": 4},
            "a fixed count and autoscaling bounds exclude each other",
        ),
        ({"min_replicas": 5, "max_replicas": 2}, "the lower bound is above the upper one"),
    ],
)
def test_bad_placements_are_refused(fields: dict[str, object], expected: str) -> None:
    with pytest.raises(DefinitionError) as err:
        Placement(**fields)  # type: ignore[arg-type]
    assert expected in str(err.value)


def test_a_placement_overridden_keeps_what_the_override_leaves_unset() -> None:
    code = Placement(replicas=2, num_cpus=1.0, num_gpus=0.5)
    assert code.merged(Placement(num_gpus=1)) == Placement(replicas=2, num_cpus=1.0, num_gpus=1)
    autoscaled = code.merged(Placement(min_replicas=1, max_replicas=4))
    assert autoscaled == Placement(min_replicas=1, max_replicas=4, num_cpus=1.0, num_gpus=0.5)
    assert autoscaled.autoscales and not code.autoscales
    assert autoscaled.merged(Placement(replicas=3)).replicas == 3  # and no bounds left
    assert not autoscaled.merged(Placement(replicas=3)).autoscales


def test_a_placement_that_is_not_one_fails_at_import_naming_the_model() -> None:
    app = BlazeApp()
    with pytest.raises(DefinitionError) as err:

        @app.model("echo", placement={"replicas": 2})  # type: ignore[arg-type]
        def echo(text: str) -> str:
            return text

    assert "model 'echo'" in str(err.value)
    assert "is not a Placement" in str(err.value)
