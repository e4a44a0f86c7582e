"""The Open Inference Protocol's gRPC definition, shipped compiled (no protoc at run time).

grpc_predict_v2.proto is the protocol's published definition, streaming extension included;
scripts/compile-protos compiles it into grpc_predict_v2.pb, and a unit test checks the two agree.
"""

from __future__ import annotations

from blazerpc.grpc.protocols import compiled_protocol

__all__ = ("INFERENCE",)

INFERENCE = compiled_protocol(__name__, "grpc_predict_v2.pb")
"""`inference.GRPCInferenceService`: its file, message classes and service name."""
