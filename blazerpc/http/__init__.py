"""The HTTP transport: the JSON/SSE gateway, its call port, WebSockets and OpenAPI.

Imports nothing from `grpc` or from a protocol layer such as `openinference`.
"""
