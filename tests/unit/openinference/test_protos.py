"""The Open Inference Protocol's descriptor we ship: compiled from the .proto we ship, and the
same, message for message and rpc for rpc, as Triton's own (tritonclient's service_pb2)."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc
from tritonclient.grpc import service_pb2

from blazerpc.openinference import protos
from blazerpc.openinference.protos import INFERENCE

PROTOS = Path(protos.__file__).parent


def test_the_shipped_descriptor_is_compiled_from_the_shipped_proto(tmp_path: Path) -> None:
    compiled = tmp_path / "grpc_predict_v2.pb"
    arguments = [f"-I{PROTOS}", f"--descriptor_set_out={compiled}", "grpc_predict_v2.proto"]
    assert protoc.main(["protoc", *arguments]) == 0
    assert compiled.read_bytes() == (PROTOS / "grpc_predict_v2.pb").read_bytes(), (
        "run scripts/compile-protos"
    )


def test_every_message_matches_tritons_definition_field_for_field() -> None:
    ours = descriptor_pb2.FileDescriptorProto()
    INFERENCE.file.CopyToProto(ours)
    theirs = descriptor_pb2.FileDescriptorProto()
    service_pb2.DESCRIPTOR.CopyToProto(theirs)
    their_messages = {message.name: message for message in theirs.message_type}
    for message in ours.message_type:
        assert _fields(message) == _fields(their_messages[message.name]), message.name
    their_rpcs = {method.name: _rpc(method) for method in theirs.service[0].method}
    assert [_rpc(method) for method in ours.service[0].method] == [
        their_rpcs[method.name] for method in ours.service[0].method
    ]


def _rpc(method: descriptor_pb2.MethodDescriptorProto) -> tuple[object, ...]:
    return (
        method.name,
        method.input_type,
        method.output_type,
        method.client_streaming,
        method.server_streaming,
    )


def _fields(message: descriptor_pb2.DescriptorProto) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = [
        (f.name, f.number, f.type, f.label, f.type_name) for f in message.field
    ]
    for nested in message.nested_type:
        rows += [(nested.name, *row) for row in _fields(nested)]
    return sorted(rows, key=str)
