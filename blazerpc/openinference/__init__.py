"""The Open Inference Protocol (KServe v2) over gRPC and REST, tensors read off the schema.

A protocol layer: it composes pieces of `grpc` and `http`; the server mounts it.
"""
