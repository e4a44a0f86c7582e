"""What users put in annotations and decorators: Field, Tensor, Batching, Continuous, Step, Stop.

Each checks its own arguments when it is made, so a mistake fails at import, naming the fix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from blazerpc.errors import DefinitionError

__all__ = (
    "MAX_FIELD_NUMBER",
    "TENSOR_DATATYPES",
    "Batching",
    "Continuous",
    "Field",
    "Placement",
    "Skip",
    "Step",
    "Stop",
    "Tensor",
)


@dataclass(frozen=True, slots=True)
class Field:
    """Pins a field's wire number: `count: Annotated[int, Field(7)]`.

    Numbers are otherwise assigned for you and kept stable by the lock file (see
    docs/schema-evolution.md); pin one only to match a schema that exists elsewhere.
    """

    number: int

    def __post_init__(self) -> None:
        is_int = isinstance(self.number, int) and not isinstance(self.number, bool)
        if not is_int or not 1 <= self.number <= MAX_FIELD_NUMBER or 19000 <= self.number <= 19999:
            raise DefinitionError(
                f"Field({self.number!r}): a protobuf field number is a whole number from 1 to "
                f"{MAX_FIELD_NUMBER}, outside 19000-19999 (reserved by protobuf). "
                "Use for example Field(7)."
            )


MAX_FIELD_NUMBER = 536_870_911

TENSOR_DATATYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}
"""numpy dtype name -> the Open Inference Protocol's datatype, for every dtype a Tensor takes."""


@dataclass(frozen=True, slots=True)
class Tensor:
    """Declares a numpy array parameter or result: `Annotated[np.ndarray, Tensor("float32")]`.

    `shape` is optional; in it, -1 marks a dimension of any size: `Tensor("uint8", (-1, 3))`.
    Arrays are read without copying from the request's bytes (so they are read-only), and
    travel little-endian, C order.
    """

    dtype: str
    shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.dtype not in TENSOR_DATATYPES:
            raise DefinitionError(
                f"Tensor({self.dtype!r}): the dtype is one of {', '.join(TENSOR_DATATYPES)}. "
                'Use for example Tensor("float32").'
            )
        if self.shape is not None and not (
            isinstance(self.shape, tuple)
            and all(isinstance(size, int) and size >= -1 for size in self.shape)
        ):
            raise DefinitionError(
                f"Tensor({self.dtype!r}, {self.shape!r}): the shape is a tuple of sizes, -1 "
                f'for any size. Use for example Tensor("{self.dtype}", (-1, 3)).'
            )

    @property
    def datatype(self) -> str:
        """The Open Inference Protocol's name for the dtype: `FP32`."""
        return TENSOR_DATATYPES[self.dtype]

    def describe(self) -> str:
        """`float32 [-1, 3]`, for comments and messages."""
        shape = "any shape" if self.shape is None else str(list(self.shape))
        return f"{self.dtype} {shape}"

    def fits(self, shape: tuple[int, ...]) -> bool:
        """Whether an array of `shape` is one this tensor takes."""
        if self.shape is None:
            return True
        return len(shape) == len(self.shape) and all(
            want in (-1, got) for want, got in zip(self.shape, shape, strict=True)
        )


@dataclass(frozen=True, slots=True)
class Batching:
    """How a batched model groups concurrent calls; every knob has one exact meaning.

    - `max_size`: the most calls in one batch, never exceeded.
    - `max_wait_s`: the longest a call waits for company, counted from its arrival; 0 means
      never wait: a batch starts as soon as the model is free.
    - `max_queue`: calls waiting beyond this many are refused at once (RESOURCE_EXHAUSTED).
    - `max_concurrent`: how many batches may run at the same time.

    While a batch runs, new calls queue and form the next one, so batches grow with load
    without adding latency to a lone call.
    """

    max_size: int = 32
    max_wait_s: float = 0.0
    max_queue: int = 1024
    max_concurrent: int = 1

    def __post_init__(self) -> None:
        for knob, value, smallest in (
            ("max_size", self.max_size, 1),
            ("max_queue", self.max_queue, 1),
            ("max_concurrent", self.max_concurrent, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < smallest:
                raise DefinitionError(
                    f"Batching({knob}={value!r}): {knob} is a whole number of at least "
                    f"{smallest}. Use for example {knob}={max(smallest, 8)}."
                )
        if not isinstance(self.max_wait_s, int | float) or not 0 <= self.max_wait_s < 60:
            raise DefinitionError(
                f"Batching(max_wait_s={self.max_wait_s!r}): the wait is in seconds, from 0 "
                "(never wait) to under 60. Use for example max_wait_s=0.002."
            )


@dataclass(frozen=True, slots=True)
class Continuous:
    """Continuous batching of a streaming model: its function is a *step* over the streams
    active now, and streams join and leave between steps (docs/batching.md).

    - `max_size`: the most streams resident in the batch, paused ones included.
    - `max_queue`: streams waiting for a slot beyond this many are refused at once
      (RESOURCE_EXHAUSTED).
    - `release`: called with a stream's `Step` once it has left, however it left (its end,
      an error, its caller gone), after the last step that included it: free its slot there.
    """

    max_size: int = 32
    max_queue: int = 256
    release: Callable[[Step], Any] | None = None

    def __post_init__(self) -> None:
        for knob, value in (("max_size", self.max_size), ("max_queue", self.max_queue)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DefinitionError(
                    f"Continuous({knob}={value!r}): {knob} is a whole number of at least 1. "
                    f"Use for example {knob}=32."
                )
        if self.release is not None and not callable(self.release):
            raise DefinitionError(
                f"Continuous(release={self.release!r}): release is a function taking the "
                "stream's Step, called once when the stream leaves."
            )


@dataclass(frozen=True, slots=True)
class Placement:
    """Where and how many copies of a model run when it is scaled out (`blaze ray`,
    docs/scale-out.md); a server on one machine ignores it.

    - `replicas`: a fixed number of copies; or autoscale between `min_replicas` and
      `max_replicas`, aiming at `target_ongoing_requests` calls in progress per copy.
    - `max_ongoing_requests`: the most calls one copy holds at once (more wait in the router).
    - `num_cpus`, `num_gpus`: what one copy reserves on the cluster (fractions allowed).

    A field left None takes its default (docs/scale-out.md) or a command-line value.
    """

    replicas: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing_requests: float | None = None
    max_ongoing_requests: int | None = None
    num_cpus: float | None = None
    num_gpus: float | None = None

    def __post_init__(self) -> None:
        for knob, smallest in (
            ("replicas", 1),
            ("min_replicas", 0),
            ("max_replicas", 1),
            ("max_ongoing_requests", 1),
        ):
            value = getattr(self, knob)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < smallest
            ):
                raise DefinitionError(
                    f"Placement({knob}={value!r}): {knob} is a whole number of at least "
                    f"{smallest}. Use for example {knob}={max(smallest, 2)}."
                )
        for knob in ("target_ongoing_requests", "num_cpus", "num_gpus"):
            value = getattr(self, knob)
            is_number = isinstance(value, int | float) and not isinstance(value, bool)
            if value is not None and (not is_number or value < 0):
                raise DefinitionError(
                    f"Placement({knob}={value!r}): {knob} is a number of at least 0 "
                    f"(fractions allowed). Use for example {knob}=0.5."
                )
        autoscales = self.min_replicas is not None or self.max_replicas is not None
        if self.replicas is not None and autoscales:
            raise DefinitionError(
                f"Placement(replicas={self.replicas}, min_replicas={self.min_replicas}, "
                f"max_replicas={self.max_replicas}): a fixed count and autoscaling bounds "
                "exclude each other. Give replicas=, or min_replicas= and max_replicas=."
            )
        if self.min_replicas is not None and self.max_replicas is not None:
            if self.min_replicas > self.max_replicas:
                raise DefinitionError(
                    f"Placement(min_replicas={self.min_replicas}, "
                    f"max_replicas={self.max_replicas}): the lower bound is above the upper "
                    "one. Swap them."
                )
        if self.target_ongoing_requests == 0:
            raise DefinitionError(
                "Placement(target_ongoing_requests=0): autoscaling aims at a number of calls "
                "per copy above 0. Use for example target_ongoing_requests=2."
            )

    @property
    def autoscales(self) -> bool:
        """Whether the number of copies follows the load (bounds or a target were given)."""
        return self.replicas is None and (
            self.min_replicas is not None
            or self.max_replicas is not None
            or self.target_ongoing_requests is not None
        )

    def merged(self, overrides: Placement) -> Placement:
        """These values, with every field `overrides` sets taking its place; a fixed count
        and autoscaling bounds replace each other."""
        names = [field.name for field in dataclasses.fields(self)]
        values = {name: getattr(self, name) for name in names}
        if overrides.replicas is not None:
            values |= {"min_replicas": None, "max_replicas": None}
        if overrides.min_replicas is not None or overrides.max_replicas is not None:
            values["replicas"] = None
        for name in names:
            if getattr(overrides, name) is not None:
                values[name] = getattr(overrides, name)
        return Placement(**values)


@dataclass(slots=True)
class Step:
    """One stream's slot in a continuous batch, kept between steps."""

    state: Any = None
    """The model's own: set it on the first step, read it on the next."""
    is_first: bool = True
    """The stream joined since the last step."""
    index: int = 0
    """How many values the stream has produced so far."""


class Stop:
    """A step's entry that ends its stream: `Stop`, or `Stop(value)` for a last value."""

    __slots__ = ("value",)
    _NOTHING: Any = object()

    def __init__(self, value: Any = _NOTHING) -> None:
        self.value = value

    @property
    def has_value(self) -> bool:
        """`Stop(value)` rather than `Stop()`."""
        return self.value is not Stop._NOTHING


class Skip:
    """A step's entry that sends nothing to its stream this step (it stays, its index kept):
    for a model holding back text that may turn out to be a stop sequence."""

    __slots__ = ()
