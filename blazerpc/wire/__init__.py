"""Codecs and artefacts read off the schema: descriptor, .proto text, protobuf, JSON, arrays.

Nothing here knows a transport: no grpclib, h2, starlette or uvicorn (an import contract
says so).
"""
