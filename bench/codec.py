"""Codec benchmark: why the wire classes are upb, not betterproto.

    .venv/bin/pip install -e '.[bench]' && .venv/bin/python -m bench.codec

Encodes and decodes GenerateRequest {prompt, max_tokens} with raw upb, with blazerpc's codec
(upb plus required fields, defaults and wire-type checks), and with betterproto 2.0.0b7; then
feeds each the malformed bodies of the serving tests and reports which it accepts.
"""

from __future__ import annotations

import dataclasses
import timeit

import betterproto

from blazerpc.errors import WireError
from blazerpc.wire.protobuf import SchemaCodec
from examples.chat import app

MALFORMED = {
    "truncated varint": b"\x10\x80",
    "wrong wire type": b"\x08\x05",
    "invalid UTF-8": b"\x0a\x02\xff\xfe",
    "length past the end": b"\x0a\x05ab",
    "random bytes": b"\xff\xff\xff\x07garbage",
}


@dataclasses.dataclass(eq=False, repr=False)
class BetterGenerateRequest(betterproto.Message):
    prompt: str = betterproto.string_field(1, optional=True)
    max_tokens: int = betterproto.int64_field(2, optional=True)


def per_call_us(function: object, number: int = 50_000) -> float:
    return timeit.timeit(function, number=number) / number * 1e6  # type: ignore[arg-type]


def main() -> None:
    codec = SchemaCodec(app.schema)
    ours = codec.models["generate"].request
    upb = codec.classes["GenerateRequest"]
    data = upb(prompt="Tell me about gRPC", max_tokens=32).SerializeToString()
    rows = {
        "upb (protobuf)": (
            per_call_us(
                lambda: upb(prompt="Tell me about gRPC", max_tokens=32).SerializeToString()
            ),
            per_call_us(lambda: upb.FromString(data)),
        ),
        "blazerpc codec (upb + checks)": (
            per_call_us(lambda: ours.encode({"prompt": "Tell me about gRPC", "max_tokens": 32})),
            per_call_us(lambda: ours.decode(data)),
        ),
        "betterproto 2.0.0b7": (
            per_call_us(
                lambda: bytes(BetterGenerateRequest(prompt="Tell me about gRPC", max_tokens=32)),
                number=5_000,
            ),
            per_call_us(lambda: BetterGenerateRequest().parse(data), number=5_000),
        ),
    }
    print("| codec | encode (us) | decode (us) |")
    print("| --- | --- | --- |")
    for name, (encode, decode) in rows.items():
        print(f"| {name} | {encode:.2f} | {decode:.2f} |")

    print("\n| malformed body | blazerpc codec | betterproto 2.0.0b7 |")
    print("| --- | --- | --- |")
    for name, body in MALFORMED.items():
        print(
            f"| {name} | {_verdict(lambda b=body: ours.decode(b))} | "
            f"{_verdict(lambda b=body: BetterGenerateRequest().parse(b))} |"
        )


def _verdict(decode: object) -> str:
    try:
        decode()  # type: ignore[operator]
    except (WireError, ValueError, IndexError, KeyError, TypeError, EOFError) as err:
        return f"rejected ({type(err).__name__})"
    return "**accepted**"


if __name__ == "__main__":
    main()
