"""blazerpc on Ray Serve: the models of tests/apps/ray_models.py in replicas on a local Ray
cluster (2 CPUs, bound to 127.0.0.1, usage stats off), blazerpc's server in front.

The cluster and the models' deployment are made once for the module and shut down at its end;
each test starts its own front door over them (`deploys=False`). Run these alone with
`pytest -m ray`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import grpc
import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from grpc_health.v1 import health_pb2, health_pb2_grpc
from httpx_sse import aconnect_sse

from blazerpc import BlazeClient, BlazeServer, Placement, RpcError, Status
from blazerpc.wire.proto_text import render_proto

from .support import ROOT, STOCK_CLIENT, WAIT_S, compile_stubs, run_client, wait_until

if TYPE_CHECKING:
    from blazerpc.ray import RayDeployment

pytestmark = [pytest.mark.anyio, pytest.mark.ray]

APP = ROOT / "tests" / "apps" / "ray_models.py"
EVENTS_VARIABLE = "BLAZERPC_TEST_RAY_DIR"


@pytest.fixture(scope="module")
def events() -> Iterator[Path]:
    """Where the replicas report (tests/apps/ray_models.py): set before the cluster starts."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="blazerpc-ray-") as folder:
        os.environ[EVENTS_VARIABLE] = folder
        try:
            yield Path(folder)
        finally:
            del os.environ[EVENTS_VARIABLE]


@pytest.fixture(scope="module")
def ray_imported() -> Iterator[None]:
    """Ray is imported under this fixture, not at collection: importing it replaces the
    process's log record factory (and ray.init its SIGTERM handler), which the other modules'
    tests must not see."""
    factory, on_sigterm = logging.getLogRecordFactory(), signal.getsignal(signal.SIGTERM)
    import blazerpc.ray  # noqa: F401

    try:
        yield
    finally:
        logging.setLogRecordFactory(factory)
        signal.signal(signal.SIGTERM, on_sigterm)


@pytest.fixture(scope="module")
def deployment(events: Path, ray_imported: None) -> Iterator[RayDeployment]:
    from blazerpc.ray import RayCluster, RayDeployment

    with RayCluster("local", num_cpus=2):
        deployment = RayDeployment(f"{APP}:app")
        deployment.deploy()
        try:
            yield deployment
        finally:
            deployment.delete()


def front_door(deployment: RayDeployment, **options: Any) -> BlazeServer:
    return deployment.server(port=0, deploys=False, **options)


async def test_two_replicas_answer_a_pid_model(deployment: RayDeployment) -> None:
    async with front_door(deployment) as server:
        async with BlazeClient("127.0.0.1", server.port, timeout=WAIT_S) as client:
            pids = await _replica_pids(client)
    assert len(pids) == 2
    assert os.getpid() not in pids  # the models run in the replicas, not in the front door


async def _replica_pids(client: BlazeClient) -> set[int]:
    """The whoami replicas' pids, asked until both answered: a new handle's router may know
    one replica only for its first calls."""
    pids: set[int] = set()
    with anyio.fail_after(WAIT_S):
        while len(pids) < 2:
            pids.update(await asyncio.gather(*(client.predict("whoami") for _ in range(8))))
    return pids


async def test_every_shape_through_our_client(deployment: RayDeployment) -> None:
    async with front_door(deployment) as server:
        async with BlazeClient("127.0.0.1", server.port, timeout=WAIT_S) as client:
            words = [w async for w in client.stream("tokens", prompt="a b c d", max_tokens=3)]
            total = await client.send_stream("total", _numbers(1, 2, 3, 4))
            running = [n async for n in client.exchange("running", _numbers(5, 6, 7))]
    assert words == ["a", "b", "c"]
    assert total == 10
    assert running == [5, 11, 18]


async def _numbers(*values: int) -> Any:
    for value in values:
        yield value


async def test_stock_grpcio_stubs_stream_through_ray(
    deployment: RayDeployment, tmp_path: Path
) -> None:
    """Stubs compiled from `blaze proto` output; the client knows nothing of Ray."""
    stubs = compile_stubs(render_proto(deployment.schema), "blazerpc.proto", tmp_path)
    async with front_door(deployment) as server:
        seen = await run_client(STOCK_CLIENT, stubs, server.port, "ray_models")
    assert seen == {
        "tokens": ["the", "quick", "brown"],
        "total": 6,
        "running": [1, 3, 6],
        "whoami_is_int": True,
    }


async def test_adaptive_batching_runs_inside_each_replica(deployment: RayDeployment) -> None:
    async with front_door(deployment) as server:
        async with BlazeClient("127.0.0.1", server.port, timeout=WAIT_S) as client:
            sizes = await asyncio.gather(*(client.predict("sizes", values=i) for i in range(8)))
    assert max(sizes) > 1  # calls that arrived together ran as one batch
    assert sum(1 for size in sizes if size > 1) >= max(sizes)


async def test_continuous_batching_steps_streams_together_inside_a_replica(
    deployment: RayDeployment,
) -> None:
    async with front_door(deployment) as server:
        async with BlazeClient("127.0.0.1", server.port, timeout=WAIT_S) as client:

            async def one(who: str) -> list[str]:
                return [t async for t in client.stream("steps", name=who, n=5)]

            streams = await asyncio.gather(*(one(f"s{i}") for i in range(4)))
    for i, tokens in enumerate(streams):
        assert [t.split(":")[:2] for t in tokens] == [[f"s{i}", str(k)] for k in range(5)]
    shared = [int(t.split(":")[2]) for tokens in streams for t in tokens]
    assert max(shared) > 1  # streams shared steps
    assert max(shared) <= 8


async def test_cancel_and_deadline_reach_the_generator_in_its_replica(
    deployment: RayDeployment, events: Path
) -> None:
    async with front_door(deployment) as server:
        async with BlazeClient("127.0.0.1", server.port, timeout=WAIT_S) as client:
            stream = client.stream("endless", tag="cancel")
            assert [await anext(stream) for _ in range(3)] == [0, 1, 2]
            await stream.aclose()  # the caller leaves
            await _wait_for_file(events / "ended-cancel")
            with pytest.raises(RpcError) as failed:
                async for _ in client.with_timeout(0.3).stream("endless", tag="deadline"):
                    pass
            await _wait_for_file(events / "ended-deadline")
    assert failed.value.status is Status.DEADLINE_EXCEEDED
    closed = {"CancelledError", "GeneratorExit"}  # cancelled at an await, or at its yield
    assert (events / "ended-cancel").read_text().split()[0] in closed
    assert (events / "ended-deadline").read_text().split()[0] in closed


async def _wait_for_file(path: Path) -> None:
    await wait_until(path.exists, f"{path.name} written by the replica")


async def test_the_context_crosses_to_the_replica(deployment: RayDeployment) -> None:
    async with front_door(deployment) as server:
        async with BlazeClient("127.0.0.1", server.port, timeout=WAIT_S) as client:
            told = await client.with_metadata({"x-team": "vision"}).predict("caller")
    request_id, team, deadline = told.split()
    assert len(request_id) >= 8
    assert (team, deadline) == ("vision", "set")


async def test_failures_keep_their_status_and_message(deployment: RayDeployment) -> None:
    for detail in ("full", "redacted"):  # the front door's config decides
        async with front_door(deployment, error_detail=detail) as server:
            async with BlazeClient("127.0.0.1", server.port, timeout=WAIT_S) as client:
                with pytest.raises(RpcError) as refused:
                    await client.predict("picky", word="Loud")
                with pytest.raises(RpcError) as crashed:
                    await client.predict("picky", word="boom")
                assert await client.predict("picky", word="quiet") == "quiet"
        assert refused.value.status is Status.INVALID_ARGUMENT
        assert refused.value.message == "'Loud' is not lower case."
        assert crashed.value.status is Status.INTERNAL
        assert crashed.value.message.startswith("model 'picky' failed")
        said = "ValueError: the model tripped on boom" in crashed.value.message
        assert said is (detail == "full")


async def test_sse_and_open_inference_through_ray(deployment: RayDeployment) -> None:
    async with front_door(deployment, http_port=0, open_inference=True) as server:
        base = f"http://127.0.0.1:{server.http_port}"
        async with httpx.AsyncClient(base_url=base, timeout=WAIT_S) as http:
            body = {"prompt": "one two three"}
            async with aconnect_sse(http, "POST", "/models/tokens", json=body) as source:
                events = [(e.event, e.data) async for e in source.aiter_sse()]
        assert events[:3] == [("message", f'{{"result":"{w}"}}') for w in ("one", "two", "three")]
        assert events[-1][0] == "end"

        def triton_sizes() -> list[int]:
            client = triton_http.InferenceServerClient(f"127.0.0.1:{server.http_port}")
            try:
                values = triton_http.InferInput("values", [1], "INT64")
                values.set_data_from_numpy(np.array([7], dtype=np.int64))
                result = client.infer("sizes", [values])
                ready = client.is_model_ready("sizes")
                return [*result.as_numpy("result").tolist(), ready]
            finally:
                client.close()

        size, ready = await anyio.to_thread.run_sync(triton_sizes)
    assert size >= 1
    assert ready is True


async def test_health_follows_the_replicas_and_a_killed_replica_loses_no_service(
    deployment: RayDeployment,
) -> None:
    async with front_door(deployment) as server:
        async with BlazeClient("127.0.0.1", server.port, timeout=WAIT_S) as client:
            pids = await _replica_pids(client)
            assert len(pids) == 2
            victim = min(pids)
            os.kill(victim, signal.SIGKILL)
            statuses: list[Status] = []
            answered: set[int] = set()
            with anyio.fail_after(60):  # Ray notices, routes around it, then replaces it
                while not (answered - pids):
                    try:
                        answered.add(await client.predict("whoami"))
                        statuses.append(Status.OK)
                    except RpcError as error:
                        statuses.append(error.status)
                    await asyncio.sleep(0.05)
            assert await _health(server.port, "whoami") == health_pb2.HealthCheckResponse.SERVING
    assert (pids - {victim}) <= answered  # the other replica kept serving
    assert set(statuses) <= {Status.OK, Status.UNAVAILABLE}
    assert statuses.count(Status.OK) >= len(statuses) - 5  # the other replica kept serving


async def _health(port: int, name: str) -> int:
    def check() -> int:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=WAIT_S)
            return int(reply.status)

    return await anyio.to_thread.run_sync(check)


async def test_lifespan_hooks_run_once_per_replica_and_end_when_deleted(
    deployment: RayDeployment, events: Path
) -> None:
    """A deployment of its own (named apart), deployed by its front door and deleted by its
    drain: every replica ran the hooks' start once, and their end once it was deleted."""
    own = type(deployment)(
        f"{APP}:app",
        name="lifespan-test",
        placement=Placement(num_cpus=0.05),
        placements={"whoami": Placement(replicas=2)},
    )
    before = _lines(events / "lifespan")
    async with own.server(port=0) as server:
        async with BlazeClient("127.0.0.1", server.port, timeout=WAIT_S) as client:
            pids = await _replica_pids(client)
        started = _lines(events / "lifespan") - before
    ended = _lines(events / "lifespan") - before - started
    whoami_starts = {line for line in started if line.startswith("start whoami ")}
    assert whoami_starts == {f"start whoami {pid}" for pid in pids}
    assert len(started) == len(own.schema.models) + 1  # one per replica: whoami has two
    assert {line.replace("start", "stop", 1) for line in started} == ended


def _lines(path: Path) -> set[str]:
    return set(path.read_text().splitlines()) if path.exists() else set()


def test_placements_get_the_documented_defaults(deployment: RayDeployment) -> None:
    assert deployment.placement("whoami") == Placement(
        replicas=2, max_ongoing_requests=100, num_cpus=0.1, num_gpus=0
    )
    # a batched replica holds what its batcher accepts: max_size x max_concurrent + max_queue
    assert deployment.placement("sizes").max_ongoing_requests == 8 * 1 + 1024
    assert deployment.application_name("tokens") == "blazerpc.InferenceService.tokens"


def test_a_model_is_ready_while_a_replica_runs(deployment: RayDeployment) -> None:
    from ray.serve._private.common import DeploymentStatus, DeploymentStatusTrigger
    from ray.serve.schema import (
        ApplicationStatus,
        ApplicationStatusOverview,
        DeploymentStatusOverview,
    )

    from blazerpc.ray.deployment import _readiness

    def app(status: DeploymentStatus, running: int) -> ApplicationStatusOverview:
        states: Any = {"RUNNING": running, "STARTING": 1}
        overview = DeploymentStatusOverview(status, DeploymentStatusTrigger.UNSPECIFIED, states, "")
        return ApplicationStatusOverview(ApplicationStatus.RUNNING, "", 0.0, {"m": overview})

    fixed = Placement(replicas=2)
    assert _readiness("m", app(DeploymentStatus.UNHEALTHY, 1), fixed) == (True, "")
    ready, reason = _readiness("m", app(DeploymentStatus.UNHEALTHY, 0), fixed)
    assert not ready
    assert reason == (
        "model 'm' has no running replica on the Ray cluster (deployment UNHEALTHY); "
        "retry in a moment."
    )
    to_zero = Placement(min_replicas=0, max_replicas=2)
    assert _readiness("m", app(DeploymentStatus.HEALTHY, 0), to_zero) == (True, "")
    assert not _readiness("m", None, fixed)[0]


async def test_empty_client_and_bidirectional_streams_as_without_ray(
    deployment: RayDeployment,
) -> None:
    async with front_door(deployment) as server:
        async with BlazeClient("127.0.0.1", server.port, timeout=WAIT_S) as client:
            total = await client.send_stream("total", [])
            running = [n async for n in client.exchange("running", [])]
    assert (total, running) == (0, [])


async def test_client_streams_cancelled_at_once_leave_nothing_in_the_inbox(
    deployment: RayDeployment,
) -> None:
    async def forever() -> Any:
        while True:
            yield 1
            await asyncio.sleep(0.01)

    async with front_door(deployment) as server:
        async with BlazeClient("127.0.0.1", server.port, timeout=WAIT_S) as client:
            for pause in [0.0, 0.001, 0.002, 0.005] * 8:
                call = asyncio.ensure_future(client.send_stream("total", forever()))
                await asyncio.sleep(pause)
                call.cancel()
                await asyncio.gather(call, return_exceptions=True)
            await wait_until(lambda: server.running_calls == 0, "the calls ended")
        inbox = deployment._inbox
        for _ in range(100):  # the front door's discards reach the actor shortly
            if await inbox.count.remote() == 0:
                break
            await asyncio.sleep(0.05)
        assert await inbox.count.remote() == 0


# Ray delivers an actor task at least once: a call retried after a transient network error may
# run twice, late, after calls sent later (github.com/ray-project/ray/pull/47659). The inbox is
# driven here directly, in that order, as its actor would run the calls.


@pytest.fixture
def inbox(ray_imported: None) -> Any:
    from blazerpc.ray.inbox import StreamInbox

    return StreamInbox()


async def test_an_open_run_twice_around_its_discard_leaves_no_stream(inbox: Any) -> None:
    await inbox.open("s")
    await inbox.discard("s")
    await inbox.open("s")  # the first attempt's repeat
    assert await inbox.count() == 0
    assert await inbox.put("s", 0, {"value": 1}) is False  # the call is over


async def test_a_put_run_twice_is_taken_once(inbox: Any) -> None:
    await inbox.open("s")
    assert await inbox.put("s", 0, {"value": 1})
    assert await inbox.put("s", 0, {"value": 1})  # repeated: accepted, not kept again
    assert await inbox.put("s", 1, {"value": 2})
    assert await inbox.put("s", 2, None)
    assert [await inbox.take("s", i) for i in range(3)] == [{"value": 1}, {"value": 2}, None]


async def test_a_take_run_twice_gives_the_same_message(inbox: Any) -> None:
    await inbox.open("s")
    for index, value in enumerate([1, 2]):
        await inbox.put("s", index, {"value": value})
    assert await inbox.take("s", 0) == {"value": 1}
    assert await inbox.take("s", 0) == {"value": 1}  # the first reply was lost: asked again
    assert await inbox.take("s", 1) == {"value": 2}
    assert await inbox.put("s", 0, {"value": 1})  # a late repeat of a put already taken
    await inbox.put("s", 2, None)
    assert await inbox.take("s", 2) is None


async def test_a_stream_holds_a_few_messages_until_the_replica_takes(inbox: Any) -> None:
    from blazerpc.ray.inbox import DEPTH

    await inbox.open("s")
    for index in range(DEPTH):
        assert await inbox.put("s", index, {"value": index})
    late = asyncio.ensure_future(inbox.put("s", DEPTH, {"value": DEPTH}))
    await asyncio.sleep(0.01)
    assert not late.done()  # full: the front door waits, so its client is slowed down
    assert await inbox.take("s", 0) == {"value": 0}
    assert await inbox.take("s", 1) == {"value": 1}  # taking 1 says 0 arrived: room for one
    assert await late is True
    await inbox.discard("s")
    assert await inbox.take("s", 2) is None  # the call is over
