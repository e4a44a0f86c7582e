"""The gRPC transport: the typed service, health, reflection and the grpclib glue.

Imports nothing from `http` or from a protocol layer such as `openinference`.
"""
