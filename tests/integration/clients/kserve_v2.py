"""The KServe SDK's inference clients, protocol v2, REST and gRPC, as its docs use them.

`python kserve_v2.py REST_PORT GRPC_PORT`: readiness, then `add` (INT64) over both clients;
prints one line per answer.
"""

import asyncio
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

rest_port, grpc_port = sys.argv[1], sys.argv[2]


def add_request() -> InferRequest:
    a = InferInput(name="a", shape=[1], datatype="INT64")
    a.set_data_from_numpy(np.array([2], dtype=np.int64), binary_data=False)
    b = InferInput(name="b", shape=[1], datatype="INT64")
    b.set_data_from_numpy(np.array([40], dtype=np.int64), binary_data=False)
    return InferRequest(model_name="add", infer_inputs=[a, b], request_id="k1")


async def main() -> None:
    base_url = f"http://127.0.0.1:{rest_port}"
    async with InferenceRESTClient(config=RESTConfig(protocol="v2")) as rest:
        print("rest live", await rest.is_server_live(base_url))
        print("rest ready", await rest.is_model_ready(base_url, "add"))
        answer = await rest.infer(base_url, add_request(), model_name="add")
        print("rest add", answer.outputs[0].name, answer.outputs[0].as_numpy().tolist())
    grpc_client = InferenceGRPCClient(url=f"127.0.0.1:{grpc_port}")
    try:
        print("grpc ready", await grpc_client.is_model_ready("add"))
        answer = await grpc_client.infer(add_request())
        print("grpc add", answer.outputs[0].name, answer.outputs[0].as_numpy().tolist())
    finally:
        await grpc_client.close()


asyncio.run(main())
