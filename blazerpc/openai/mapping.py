"""Which OpenAI request fields fill which parameters of a model, checked when it is defined.

A model registered with `openai="chat"` (or "completions", "embeddings") takes the request
fields of the same names as its parameters. Fields it does not take are ignored, as OpenAI
servers do, unless they would change the shape of the answer (`n` > 1, `tools`,
`response_format`, `logprobs`, ...): those are refused, naming the field, so a client never
gets less than it asked for without knowing.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from blazerpc.errors import WireError
from blazerpc.openai.types import Chunk
from blazerpc.schema.naming import RESULT_FIELD
from blazerpc.schema.spec import ModelSpec, Shape
from blazerpc.schema.typemap import Site, describe

__all__ = ("FIELDS", "MAIN_FIELD", "Kind", "check_model", "request_fields")


class Kind(enum.Enum):
    """What an OpenAI route serves, and the value of `openai=` that opts a model in."""

    CHAT = "chat"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"


_SAMPLING = {
    "model",
    "user",
    "seed",
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "metadata",
    "store",
    "service_tier",
    "n",
    "logprobs",
    "stream",
    "stream_options",
}
FIELDS: dict[Kind, frozenset[str]] = {
    Kind.CHAT: frozenset(
        _SAMPLING
        | {
            "messages",
            "max_completion_tokens",
            "top_logprobs",
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "response_format",
            "functions",
            "function_call",
            "reasoning_effort",
            "modalities",
            "prediction",
            "audio",
        }
    ),
    Kind.COMPLETIONS: frozenset(_SAMPLING | {"prompt", "suffix", "echo", "best_of"}),
    Kind.EMBEDDINGS: frozenset({"model", "input", "encoding_format", "dimensions", "user"}),
}
"""The request fields of each kind, as the OpenAI API defines them."""
MAIN_FIELD = {Kind.CHAT: "messages", Kind.COMPLETIONS: "prompt", Kind.EMBEDDINGS: "input"}


def _set(value: object) -> bool:
    return value is not None and value is not False and value != [] and value != {}


_RESHAPING: dict[str, Callable[[object], bool]] = {
    "n": lambda value: value not in (None, 1),
    "best_of": lambda value: value not in (None, 1),
    "tools": _set,
    "functions": _set,
    "tool_choice": lambda value: value not in (None, "none", "auto"),
    "function_call": lambda value: value not in (None, "none", "auto"),
    "response_format": lambda value: value not in (None, {"type": "text"}),
    "logprobs": lambda value: value not in (None, False, 0),
    "top_logprobs": lambda value: value not in (None, 0),
    "echo": _set,
    "suffix": _set,
    "dimensions": _set,
    "audio": _set,
    "prediction": _set,
}
"""Fields that change what the answer holds: refused unless the model takes them."""
_WHY = {
    "n": "this model gives one choice per request; send n=1 or leave it out.",
    "best_of": "this model gives one choice per request; leave best_of out.",
    "logprobs": "this model does not report log probabilities; leave logprobs out.",
    "top_logprobs": "this model does not report log probabilities; leave top_logprobs out.",
}


def check_model(spec: ModelSpec, kind: Kind) -> None:
    """DefinitionError unless every parameter can be filled from a request of `kind` and the
    result can become its response."""
    site = Site(spec.name, spec.location)
    fields = FIELDS[kind]
    main = MAIN_FIELD[kind]
    names = [field.name for field in spec.request.fields]
    if spec.shape.is_client_streaming:
        site.fail(
            f'openai="{kind.value}" serves one request document per call, and the model takes '
            "a stream of requests.",
            "Take the request's fields as plain parameters.",
        )
    if kind is Kind.EMBEDDINGS and spec.shape is not Shape.UNARY:
        site.fail(
            'openai="embeddings" answers one list of vectors, and the model streams.',
            "Return the vectors instead of yielding them.",
        )
    if main not in names:
        site.fail(
            f'openai="{kind.value}" needs a parameter {main!r}: every {kind.value} request '
            f"carries it.",
            f"Add a parameter named {main!r}.",
        )
    for field in spec.request.fields:
        if field.name not in fields and field.is_required:
            known = ", ".join(sorted(fields - {"stream", "stream_options"}))
            site.fail(
                f"parameter {field.name!r} is not a field of an OpenAI {kind.value} request, "
                f'so openai="{kind.value}" cannot fill it.',
                f"Give it a default, or rename it to one of the request's fields ({known}).",
            )
    result = _result_annotation(spec)
    if kind is Kind.EMBEDDINGS:
        if result not in _VECTOR_RESULTS:
            site.fail(
                f"the result is {describe(result)}, which is not a list of vectors.",
                "Return list[list[float]] (one vector per input), or list[float] for a "
                "model whose input is one str.",
            )
        return
    if result not in (str, Chunk):
        site.fail(
            f"the result is {describe(result)}, which cannot become {kind.value} text.",
            "Return (or yield) str, or blazerpc.openai.Chunk to report why it stopped and "
            "the prompt's token count.",
        )


_VECTOR_RESULTS: tuple[object, ...] = (list[float], list[list[float]])


def _result_annotation(spec: ModelSpec) -> object:
    for field in spec.response.fields:
        if field.name == RESULT_FIELD:
            return field.annotation
    return None


def request_fields(spec: ModelSpec, kind: Kind, document: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an OpenAI request `spec` takes, as JSON values, adapted to the parameters'
    types (a `stop` string for a list, content parts joined); WireError naming the field if
    the request asks for what the model cannot give."""
    takes = {field.name: field.annotation for field in spec.request.fields}
    for name, is_reshaping in _RESHAPING.items():
        if name not in takes and is_reshaping(document.get(name)):
            why = _WHY.get(name, f"this model does not support {name}; leave it out.")
            raise WireError(f"field {name!r}: {why}")
    main = MAIN_FIELD[kind]
    if document.get(main) is None:
        raise WireError(f"field {main!r} is required: every {kind.value} request carries it.")
    if document[main] == []:
        raise WireError(f"field {main!r} is empty: send at least one.")
    stream = document.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise WireError(f"field 'stream': expected true or false, got {stream!r}.")
    encoding = document.get("encoding_format")
    if kind is Kind.EMBEDDINGS and encoding not in (None, "float", "base64"):
        raise WireError(
            f'field \'encoding_format\': expected "float" or "base64", got {encoding!r}.'
        )
    values = {name: document[name] for name in takes if name in document}
    if "max_tokens" in takes and values.get("max_tokens") is None:
        if document.get("max_completion_tokens") is not None:  # what newer clients send
            values["max_tokens"] = document["max_completion_tokens"]
    limit = values.get("max_tokens")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit < 1:
        raise WireError(f"field 'max_tokens': expected at least 1, got {limit}.")
    for name in list(values):
        if values[name] is None and name != MAIN_FIELD[kind]:
            del values[name]  # `null` is "not given": the parameter's default applies
    for name, value in values.items():
        values[name] = _adapted(value, takes[name])
    if kind is Kind.CHAT and isinstance(values.get("messages"), list):
        values["messages"] = [_joined_content(m, i) for i, m in enumerate(values["messages"])]
    return values


def _adapted(value: Any, annotation: object) -> Any:
    """A string where the parameter takes a list of them (`stop`, `prompt`, `input`) becomes
    a list of one; a list of one where it takes a string, its item."""
    options = [a for a in typing.get_args(annotation) if a is not type(None)]
    bare = (
        options[0] if typing.get_origin(annotation) in _UNIONS and len(options) == 1 else annotation
    )
    is_list = typing.get_origin(bare) is list
    if is_list and isinstance(value, str):
        return [value]
    if bare is str and isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


_UNIONS = (typing.Union, types.UnionType)


def _joined_content(message: Any, index: int) -> Any:
    """`content` sent as parts: their text, joined; a part that is not text is refused."""
    if not isinstance(message, dict):
        return message
    content = message.get("content")
    if content is None:
        return {**message, "content": ""}
    if not isinstance(content, list):
        return message
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise WireError(
                f"field 'messages[{index}].content': this model reads text, and a part is "
                f"{kind!r}; send text parts only."
            )
        texts.append(str(part.get("text") or ""))
    return {**message, "content": "".join(texts)}
