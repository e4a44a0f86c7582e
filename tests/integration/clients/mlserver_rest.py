"""MLServer's REST `generate_stream` client, from its streaming docs (../shared/seeds/001).

Edits: the request is built here instead of read from generate-request.json, the URL takes the
port from the command line, and it runs as a script. It prints each decoded output.
"""

import sys

import httpx
from httpx_sse import connect_sse
from mlserver import types
from mlserver.codecs import StringCodec

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

with httpx.Client() as client:
    with connect_sse(
        client,
        "POST",
        f"http://127.0.0.1:{port}/v2/models/text-model/generate_stream",
        json=inference_request.dict(),
    ) as event_source:
        for sse in event_source.iter_sse():
            response = types.InferenceResponse.parse_raw(sse.data)
            print(StringCodec.decode_output(response.outputs[0]))
