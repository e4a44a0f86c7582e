"""MLServer's gRPC `ModelStreamInfer` client, from its streaming docs (../shared/seeds/001).

Edits: the request is built here instead of read from generate-request.json, it runs in
`asyncio.run`, the port comes from the command line, and pydantic v2's `.root` replaces
`.__root__` (mlserver 1.7.1 itself requires pydantic v2). It prints each decoded output.
"""

import asyncio
import sys

import grpc
import mlserver.grpc.converters as converters
import mlserver.grpc.dataplane_pb2_grpc as dataplane
import mlserver.types as types
from mlserver.codecs import StringCodec
from mlserver.grpc.converters import ModelInferResponseConverter

port = sys.argv[1]
inference_request = types.InferenceRequest.model_validate(
    {
        "inputs": [
            {
                "name": "prompt",
                "shape": [1],
                "datatype": "BYTES",
                "data": ["What is the capital of France?"],
                "parameters": {"content_type": "str"},
            }
        ],
        "outputs": [{"name": "output"}],
    }
)

# need to convert from string to bytes for grpc
inference_request.inputs[0] = StringCodec.encode_input("prompt", inference_request.inputs[0].data.root)
inference_request_g = converters.ModelInferRequestConverter.from_types(
    inference_request, model_name="text-model", model_version=None
)


async def get_inference_request_stream(inference_request):
    yield inference_request


async def main():
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as grpc_channel:
        grpc_stub = dataplane.GRPCInferenceServiceStub(grpc_channel)
        inference_request_stream = get_inference_request_stream(inference_request_g)

        async for response in grpc_stub.ModelStreamInfer(inference_request_stream):
            response = ModelInferResponseConverter.to_types(response)
            print(StringCodec.decode_output(response.outputs[0]))


asyncio.run(main())
