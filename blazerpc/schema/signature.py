"""A decorated function's signature -> its ModelSpec: the shape, the request and the response.

| function                                   | shape            |
| ------------------------------------------ | ---------------- |
| plain parameters, returns a value          | unary            |
| plain parameters, a generator              | server streaming |
| one AsyncIterator[T] parameter, a value    | client streaming |
| one AsyncIterator[T] parameter, generator  | bidirectional    |

Sync functions take their stream as Iterator[T].
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import operator
import os
import re
import types
import typing
from collections.abc import Callable, Mapping

from blazerpc.context import Context
from blazerpc.errors import DefinitionError
from blazerpc.schema.markers import Batching, Continuous, Placement, Skip, Step, Stop
from blazerpc.schema.naming import RESULT_FIELD, is_model_name, request_name, response_name
from blazerpc.schema.spec import (
    NO_DEFAULT,
    FieldSpec,
    MessageKind,
    MessageSpec,
    ModelSpec,
    Shape,
    doc_summary,
)
from blazerpc.schema.typemap import Site, TypeMapper, describe

__all__ = ("read_model",)

_ASYNC_STREAMS = (collections.abc.AsyncIterator, collections.abc.AsyncIterable)
_SYNC_STREAMS = (collections.abc.Iterator,)
_YIELDS = (
    collections.abc.AsyncIterator,
    collections.abc.AsyncIterable,
    collections.abc.AsyncGenerator,
    collections.abc.Iterator,
    collections.abc.Iterable,
    collections.abc.Generator,
)


_VERSION = re.compile(r"(?=.*[A-Za-z0-9])[A-Za-z0-9._+-]{1,64}")
"""A model version: one path segment of `/v2/models/{name}/versions/{version}`."""


def read_model(
    name: str,
    function: Callable[..., object],
    *,
    streaming: bool | None = None,
    batching: Batching | Continuous | None = None,
    localns: Mapping[str, object] | None = None,
    version: str = "1",
    max_concurrent: int | None = None,
    openai: str | None = None,
    placement: Placement | None = None,
) -> ModelSpec:
    """Read a model's shape and wire messages off its signature; DefinitionError if it has none.

    `localns` resolves annotations that name classes local to the decorating scope.
    """
    if not inspect.isfunction(function):
        raise _not_a_function(name, function)
    site = Site(name, _location(function))
    if not is_model_name(name):
        site.fail(
            f"the name {name!r} cannot become an rpc name.",
            "Use ASCII letters and digits, starting with a letter, optionally joined by "
            "'-', '_' or '.' (for example 'text-embed').",
        )
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        site.fail(
            f"the version {version!r} cannot be a path segment of the Open Inference Protocol.",
            "Use 1 to 64 ASCII letters, digits, '.', '_', '-' or '+', with a letter or digit "
            "among them (for example '1.2.3' or 'v2'), as version=.",
        )
    if max_concurrent is not None:
        _check_max_concurrent(max_concurrent, batching, site)
    if openai is not None and openai not in OPENAI_KINDS:
        site.fail(
            f"openai={openai!r} names no OpenAI route.",
            'Use openai="chat", "completions" or "embeddings".',
        )
    if placement is not None and not isinstance(placement, Placement):
        site.fail(
            f"placement={placement!r} is not a Placement.",
            "Use placement=Placement(replicas=2, num_cpus=0.5) (from blazerpc import Placement).",
        )
    is_generator = inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function)
    is_async = inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)
    is_continuous = isinstance(batching, Continuous)
    if is_continuous:
        _check_step_function(streaming, is_generator, site)
    else:
        _check_streaming_flag(streaming, is_generator, site)
    hints = _type_hints(function, localns, site)
    parameters = _parameters(function, hints, site)
    context = _context_parameter(parameters, site)
    parameters = [(p, ann) for p, ann in parameters if p.name != context]
    step_parameter = _step_parameter(parameters, is_continuous, site)
    parameters = [(p, ann) for p, ann in parameters if p.name != step_parameter]
    streamed = _streamed_parameter(parameters, is_async, site)
    if batching is not None:
        _check_batchable(is_generator, streamed, context, site, is_continuous=is_continuous)
        parameters, hints = _per_item(parameters, hints, site)
        is_generator = is_generator or is_continuous  # a step function serves streams
    mapper = TypeMapper(localns)
    request = _request(name, parameters, streamed, mapper, site)
    response = _response(name, hints, is_generator, mapper, site)
    client_streams = streamed is not None
    shape = {
        (False, False): Shape.UNARY,
        (False, True): Shape.SERVER_STREAMING,
        (True, False): Shape.CLIENT_STREAMING,
        (True, True): Shape.BIDIRECTIONAL,
    }[client_streams, is_generator]
    return ModelSpec(
        name=name,
        function=function,
        shape=shape,
        is_async=is_async,
        request=request,
        response=response,
        messages=mapper.messages,
        enums=mapper.enums,
        location=site.location,
        doc=doc_summary(function.__doc__),
        context_parameter=context,
        batching=batching,
        step_parameter=step_parameter,
        origins=mapper.origins,
        version=version,
        max_concurrent=max_concurrent,
        openai=openai,
        placement=placement,
    )


OPENAI_KINDS = ("chat", "completions", "embeddings")
"""The values of `openai=`: the OpenAI routes a model can be served on."""


def _check_max_concurrent(
    max_concurrent: object, batching: Batching | Continuous | None, site: Site
) -> None:
    if isinstance(batching, Continuous):
        site.fail(
            "a Continuous model runs one step at a time over its streams, so max_concurrent= "
            "has nothing to bound.",
            "Bound the streams in a step instead: Continuous(max_size=N).",
        )
    if batching is not None:
        site.fail(
            "a batched model runs whole batches, so max_concurrent= on the model has nothing "
            "to bound.",
            "Bound the batches instead: Batching(max_concurrent=N).",
        )
    if (
        isinstance(max_concurrent, bool)
        or not isinstance(max_concurrent, int)
        or max_concurrent < 1
    ):
        site.fail(
            f"max_concurrent={max_concurrent!r} is not a number of calls.",
            "Give a whole number of at least 1, or leave it out for no bound.",
        )


def _check_step_function(streaming: bool | None, is_generator: bool, site: Site) -> None:
    """A Continuous model's function is a step: it returns one entry per active stream."""
    if streaming is not True:
        site.fail(
            "batch=Continuous(...) serves streams, and streaming=True is not given.",
            "Add streaming=True: each call is a stream, and the function is its step.",
        )
    if is_generator:
        site.fail(
            "with batch=Continuous(...) the function is a step over the active streams: it "
            "returns one entry per stream, it does not yield.",
            "Return a list with one value (or Stop, or an exception) per stream.",
        )


def _step_parameter(
    parameters: list[tuple[inspect.Parameter, object]], is_continuous: bool, site: Site
) -> str | None:
    """The `list[Step]` parameter the server fills, which a Continuous step function needs."""
    found = [p.name for p, annotation in parameters if annotation == list[Step]]
    if not is_continuous:
        if found:
            site.fail(
                f"parameter {found[0]!r} is annotated list[Step], which only a "
                "batch=Continuous(...) step function receives.",
                "Add batch=Continuous(...) with streaming=True, or drop the parameter.",
            )
        return None
    if len(found) != 1:
        site.fail(
            "a Continuous step function takes one parameter annotated list[Step]: each "
            "stream's slot, with its state kept between steps.",
            "Add one parameter `steps: list[Step]` (from blazerpc import Step).",
        )
    return found[0]


def _check_batchable(
    is_generator: bool,
    streamed: inspect.Parameter | None,
    context: str | None,
    site: Site,
    *,
    is_continuous: bool = False,
) -> None:
    if is_continuous and streamed is not None:
        site.fail(
            "Continuous batching steps server streams; a stream of requests from the client "
            "has no place in a step.",
            "Take the request's fields as lists (one item per stream), or drop batch=.",
        )
    if (is_generator and not is_continuous) or streamed is not None:
        site.fail(
            "batch= is given, but the model streams, and streams are served one by one: they "
            "bypass batching.",
            "Drop batch= from the streaming model, or make it a unary batch function.",
        )
    if context is not None:
        site.fail(
            f"a batch function serves many calls at once, so it cannot take one {context!r}.",
            "Drop the Context parameter from the batch function.",
        )


def _per_item(
    parameters: list[tuple[inspect.Parameter, object]], hints: Mapping[str, object], site: Site
) -> tuple[list[tuple[inspect.Parameter, object]], dict[str, object]]:
    """A batch function's `list[T]` parameters and `list[R]` return -> the per-call T and R.

    The wire schema is the per-call one, so a client cannot tell a batched model.
    """
    items = []
    for parameter, annotation in parameters:
        if typing.get_origin(annotation) is not list:
            site.at(f"parameter {parameter.name!r}", annotation).fail(
                "a batch function receives one list per parameter, one item per call.",
                f"Annotate it list[{describe(annotation)}].",
            )
        items.append((parameter.replace(default=inspect.Parameter.empty), _item(annotation, site)))
    result = hints.get("return")
    if typing.get_origin(result) is not list:
        site.at("the return value", result).fail(
            "a batch function returns one result per call, in order.",
            f"Annotate it -> list[{describe(result)}].",
        )
    return items, {**hints, "return": _without_exceptions(_item(result, site))}


def _without_exceptions(annotation: object) -> object:
    """`int | Exception` -> `int`: a batch may return an exception to fail one call alone
    (and a step `Stop` to end one stream)."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return annotation
    kept = [
        arg
        for arg in typing.get_args(annotation)
        if not (isinstance(arg, type) and issubclass(arg, BaseException | Stop | Skip))
    ]
    return functools.reduce(operator.or_, kept) if kept else annotation


def _check_streaming_flag(streaming: bool | None, is_generator: bool, site: Site) -> None:
    if streaming is True and not is_generator:
        site.fail(
            "streaming=True, but the function is not a generator, so it cannot stream.",
            "Produce the items with `yield`, or drop streaming=True for a single response.",
        )
    if streaming is False and is_generator:
        site.fail(
            "streaming=False, but the function is a generator, so it streams its items.",
            "Drop streaming=False, or return one value instead of yielding.",
        )


def _type_hints(
    function: Callable[..., object], localns: Mapping[str, object] | None, site: Site
) -> dict[str, object]:
    try:
        return typing.get_type_hints(function, localns=dict(localns or {}), include_extras=True)
    except NameError as err:
        site.fail(
            f"an annotation cannot be resolved ({err}).",
            "Import or define the name it uses before the function.",
        )


def _parameters(
    function: Callable[..., object], hints: Mapping[str, object], site: Site
) -> list[tuple[inspect.Parameter, object]]:
    """Each parameter with its resolved annotation; variadic and unannotated ones are refused."""
    found = []
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            stars = "*" if parameter.kind is inspect.Parameter.VAR_POSITIONAL else "**"
            site.fail(
                f"parameter '{stars}{parameter.name}' has no fixed name, so it cannot be a "
                "protobuf field.",
                "Declare each input as a named, annotated parameter.",
            )
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            site.fail(
                f"parameter {parameter.name!r} is positional-only, but the server passes "
                "request fields by name.",
                "Remove the `/` from the signature.",
            )
        if parameter.name not in hints:
            site.fail(
                f"parameter {parameter.name!r} has no annotation, so its wire type is unknown.",
                f"Annotate it, for example `{parameter.name}: str`.",
            )
        found.append((parameter, hints[parameter.name]))
    return found


def _context_parameter(
    parameters: list[tuple[inspect.Parameter, object]], site: Site
) -> str | None:
    """The parameter that receives the call's Context, if the model asks for it."""
    names = [p.name for p, ann in parameters if ann is Context]
    if len(names) > 1:
        site.fail(
            f"parameters {', '.join(map(repr, names))} are all annotated Context.",
            "Ask for the Context once.",
        )
    return names[0] if names else None


def _streamed_parameter(
    parameters: list[tuple[inspect.Parameter, object]], is_async: bool, site: Site
) -> inspect.Parameter | None:
    """The parameter that receives the client's stream, if there is one."""
    streams = [
        p for p, ann in parameters if typing.get_origin(ann) in (*_ASYNC_STREAMS, *_SYNC_STREAMS)
    ]
    if not streams:
        return None
    if len(streams) > 1:
        names = ", ".join(repr(p.name) for p in streams)
        site.fail(
            f"parameters {names} are all streams, but a gRPC call carries one client stream.",
            "Stream one msgspec.Struct that holds every input.",
        )
    streamed = streams[0]
    annotation = next(ann for p, ann in parameters if p is streamed)
    at = site.at(f"parameter {streamed.name!r}", annotation)
    if is_async and typing.get_origin(annotation) in _SYNC_STREAMS:
        at.fail(
            "an async function receives its stream asynchronously.",
            f"Annotate it AsyncIterator[{describe(_item(annotation, at))}].",
        )
    if not is_async and typing.get_origin(annotation) in _ASYNC_STREAMS:
        at.fail(
            "a sync function receives its stream as a plain iterator.",
            f"Annotate it Iterator[{describe(_item(annotation, at))}], or make the function async.",
        )
    if len(parameters) > 1:
        others = ", ".join(repr(p.name) for p, _ in parameters if p is not streamed)
        at.fail(
            f"a model that takes a stream takes nothing else, but it also has {others}.",
            "Make the stream's items a msgspec.Struct holding those inputs as well "
            "(read per-stream options from the first item).",
        )
    return streamed


def _request(
    name: str,
    parameters: list[tuple[inspect.Parameter, object]],
    streamed: inspect.Parameter | None,
    mapper: TypeMapper,
    site: Site,
) -> MessageSpec:
    """One field per parameter, numbered in parameter order; a stream sends one item each."""
    fields: list[FieldSpec] = []
    for number, (parameter, annotation) in enumerate(parameters, start=1):
        at = site.at(f"parameter {parameter.name!r}", annotation)
        if parameter is streamed:
            fields.append(mapper.field(parameter.name, number, _item(annotation, at), at))
            continue
        default = NO_DEFAULT if parameter.default is inspect.Parameter.empty else parameter.default
        fields.append(mapper.field(parameter.name, number, annotation, at, default=default))
    return MessageSpec(request_name(name), MessageKind.REQUEST, tuple(fields))


def _response(
    name: str, hints: Mapping[str, object], is_generator: bool, mapper: TypeMapper, site: Site
) -> MessageSpec:
    """The return value (or each streamed item) in a field named `result`; None sends nothing."""
    if "return" not in hints:
        site.fail(
            "the return annotation is missing, so the response type is unknown.",
            "Annotate the result, for example `-> str` (or `-> AsyncIterator[str]` for a stream).",
        )
    annotation = hints["return"]
    at = site.at("the return value", annotation)
    if is_generator:
        annotation = _yielded(annotation, at)
    elif typing.get_origin(annotation) in _YIELDS:
        at.fail(
            "the function returns an iterator but is not a generator.",
            "Produce the items with `yield` in the model itself.",
        )
    elif annotation is None or annotation is type(None):
        return MessageSpec(response_name(name), MessageKind.RESPONSE, ())
    result = mapper.field(RESULT_FIELD, 1, annotation, at)
    result = dataclasses.replace(result, tracks_presence=result.is_nullable)
    return MessageSpec(response_name(name), MessageKind.RESPONSE, (result,))


def _yielded(annotation: object, site: Site) -> object:
    """The item type of a generator: AsyncIterator[T] -> T; the seed's bare `-> T` is T too."""
    if typing.get_origin(annotation) in _YIELDS or annotation in _YIELDS:
        annotation = _item(annotation, site)
    if annotation is None or annotation is type(None):
        site.fail(
            "a stream of None carries no data.", "Annotate what it yields, e.g. AsyncIterator[str]."
        )
    return annotation


def _item(annotation: object, site: Site) -> object:
    args = typing.get_args(annotation)
    if not args:
        site.fail(
            "a stream must say what its items are.", "Give the item type, e.g. AsyncIterator[str]."
        )
    return args[0]


def _location(function: Callable[..., object]) -> str:
    """`qualname in file:line`, the file relative to the working directory when inside it."""
    code = function.__code__
    path = code.co_filename
    relative = os.path.relpath(path) if os.path.isabs(path) else path
    shown = path if relative.startswith("..") else relative
    return f"{function.__qualname__} in {shown}:{code.co_firstlineno}"


def _not_a_function(name: str, target: object) -> DefinitionError:
    got = (
        f"the class {target.__qualname__}"
        if isinstance(target, type)
        else f"a {type(target).__name__} object"
    )
    return DefinitionError(
        f"model {name!r}: @app.model decorates a function, but got {got}. "
        "Decorate a `def` or `async def` function (call your object from inside it)."
    )
