"""Our descriptor and protoc's descriptor of our .proto text are the same, field for field."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_tools import protoc

from blazerpc.target import load_app
from blazerpc.wire.descriptor import file_descriptor
from blazerpc.wire.proto_text import render_proto
from tests.apps.registry import GOLDEN, GOLDEN_APPS


def _protoc(root: Path, file_name: str, include: Path, *extra: str) -> int:
    """protoc on root/file_name, so the file keeps the name the schema gives it."""
    return int(protoc.main(["protoc", f"-I{root}", f"-I{include}", *extra, str(root / file_name)]))


@pytest.mark.parametrize("name", sorted(GOLDEN_APPS))
def test_protoc_builds_the_descriptor_we_build(
    name: str, tmp_path: Path, protoc_include: Path
) -> None:
    schema = load_app(GOLDEN_APPS[name]).schema
    proto = tmp_path / schema.file_name
    proto.parent.mkdir(parents=True, exist_ok=True)
    proto.write_text((GOLDEN / f"{name}.proto").read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path / "descriptor.pb"
    assert _protoc(tmp_path, schema.file_name, protoc_include, f"--descriptor_set_out={out}") == 0

    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    assert compiled.file[0] == file_descriptor(schema)


@pytest.mark.parametrize("name", sorted(GOLDEN_APPS))
def test_stock_python_stubs_generate(name: str, tmp_path: Path, protoc_include: Path) -> None:
    schema = load_app(GOLDEN_APPS[name]).schema
    proto = tmp_path / "src" / schema.file_name
    proto.parent.mkdir(parents=True)
    proto.write_text(render_proto(schema), encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    flags = (f"--python_out={out}", f"--grpc_python_out={out}")
    assert _protoc(tmp_path / "src", schema.file_name, protoc_include, *flags) == 0
    stem = schema.file_name.removesuffix(".proto")
    assert (out / f"{stem}_pb2.py").is_file()
    assert (out / f"{stem}_pb2_grpc.py").is_file()


def test_descriptor_loads_into_a_pool_and_makes_message_classes() -> None:
    schema = load_app("tests.apps.every_type:app").schema
    pool = descriptor_pool.DescriptorPool()
    for dependency in ("timestamp", "duration"):
        module = __import__(f"google.protobuf.{dependency}_pb2", fromlist=["DESCRIPTOR"])
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb))
    pool.Add(file_descriptor(schema))
    request = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("fixture.types.MaybeRequest")
    )()
    assert not request.HasField("text")
    request.ParseFromString(b"\x0a\x00")  # field 1, an empty string: sent, though empty
    assert request.HasField("text")
