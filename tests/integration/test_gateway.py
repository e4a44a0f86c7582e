"""The HTTP gateway through a real server: httpx, httpx-sse and a WebSocket client."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import zlib
from collections.abc import AsyncIterator, Iterator

import anyio
import httpx
import pytest
import uvicorn
import websockets.asyncio.client
from httpx_sse import aconnect_sse

from blazerpc import Batching, BlazeApp, Context, Status
from blazerpc.errors import ModelError
from blazerpc.runtime.admission import Phase
from blazerpc.server import BlazeServer, bind_tcp
from examples.tracker import app as tracker_app

from .support import WAIT_S, Probe, serve_http

pytestmark = pytest.mark.anyio


def make_app(probe: Probe) -> BlazeApp:
    app = BlazeApp()

    @app.model("echo")
    def echo(text: str, times: int = 1) -> str:
        """Repeat the text."""
        return text * times

    @app.model("refuse")
    async def refuse(voice: str) -> str:
        raise ModelError(Status.NOT_FOUND, f"voice {voice!r} is not installed")

    @app.model("slow")
    async def slow(seconds: float) -> float:
        await anyio.sleep(seconds)
        return seconds

    @app.model("generate", streaming=True)
    async def generate(prompt: str, max_tokens: int = 1000) -> AsyncIterator[str]:
        try:
            for i in range(max_tokens):
                probe.produced += 1
                yield f"{prompt}{i}"
                await anyio.sleep(0.01)
        finally:
            probe.closed.set()

    @app.model("fail-midway", streaming=True)
    async def fail_midway(after: int) -> AsyncIterator[int]:
        for i in range(after):
            yield i
        raise ValueError(f"broke after {after} items")

    @app.model("spin", streaming=True)
    async def spin(name: str, count: int) -> AsyncIterator[int]:
        """Never awaits: only the server's fairness lets other streams run."""
        for i in range(count):
            probe.steps.append((name, i))
            yield i

    @app.model("held", streaming=True)
    async def held(first: str) -> AsyncIterator[str]:
        """One item, then wait for the test: an item must not wait in a buffer."""
        yield first
        await probe.until_released()
        yield "after"

    @app.model("quiet", streaming=True)
    async def quiet() -> AsyncIterator[str]:
        """Nothing to send until the test says so."""
        await probe.until_released()
        yield "finally"

    @app.model("wrong-type")
    async def wrong_type(text: str) -> int:
        return text  # type: ignore[return-value]  # the bug this model exists to show

    @app.model("big", streaming=True)
    async def big(sizes: list[int]) -> AsyncIterator[str]:
        for size in sizes:
            yield "x" * size

    @app.model("whoami")
    async def whoami(ctx: Context) -> str:
        remaining = ctx.time_remaining
        return f"{ctx.metadata.get('x-user')} {remaining is not None and 0 < remaining <= 3}"

    @app.model("total")
    async def total(numbers: AsyncIterator[int]) -> int:
        return sum([n async for n in numbers])

    @app.model("words")
    def words(lines: Iterator[str]) -> Iterator[int]:
        """Bidirectional and sync: the word count of each line, as it arrives."""
        for line in lines:
            yield len(line.split())

    return app


async def events_of(http: httpx.AsyncClient, model: str, **body: object) -> list[tuple[str, str]]:
    async with aconnect_sse(http, "POST", f"/models/{model}", json=body) as source:
        source.response.raise_for_status()
        return [(event.event, event.data) async for event in source.aiter_sse()]


async def test_unary_answers_json_and_errors_name_the_field(probe: Probe) -> None:
    async with serve_http(make_app(probe)) as served:
        http = served.http
        ok = await http.post("/models/echo", json={"text": "ab", "times": 2})
        assert ok.status_code == 200
        assert ok.json() == {"result": "abab"}
        for body, message in [
            (b'{"text": 3}', "field 'text': expected str, got int"),
            (b"{}", "field 'text' is required"),
            (b'{"txt": "a"}', "field 'txt' is not in the schema"),
            (b'{"text": "a"', "not valid JSON"),
        ]:
            bad = await http.post("/models/echo", content=body)
            assert bad.status_code == 400, body
            assert bad.json()["code"] == "INVALID_ARGUMENT"
            assert message in bad.json()["message"]
        assert (await http.post("/models/echo", json={"text": "x"})).json() == {"result": "x"}


async def test_statuses_map_to_http_statuses(probe: Probe) -> None:
    async with serve_http(make_app(probe)) as served:
        http = served.http
        missing = await http.post("/models/nope", json={})
        assert missing.status_code == 404
        assert "no model named 'nope'" in missing.json()["message"]
        assert "echo" in missing.json()["message"]
        refused = await http.post("/models/refuse", json={"voice": "alto"})
        assert refused.status_code == 404
        assert refused.json() == {"code": "NOT_FOUND", "message": "voice 'alto' is not installed"}
        late = await http.post(
            "/models/slow", json={"seconds": 5}, headers={"x-request-timeout": "0.1"}
        )
        assert late.status_code == 504
        assert late.json()["code"] == "DEADLINE_EXCEEDED"
        bad_timeout = await http.post(
            "/models/slow", json={"seconds": 0}, headers={"x-request-timeout": "soon"}
        )
        assert bad_timeout.status_code == 400
        assert "x-request-timeout" in bad_timeout.json()["message"]
        assert (await http.post("/models/slow", json={"seconds": 0.01})).json() == {"result": 0.01}


async def test_an_oversized_body_is_refused_unread(probe: Probe) -> None:
    async with serve_http(make_app(probe), max_request_bytes=100) as served:
        http = served.http
        big = await http.post("/models/echo", json={"text": "x" * 200})
        assert big.status_code == 413
        assert big.json()["code"] == "RESOURCE_EXHAUSTED"
        assert "max_request_bytes" in big.json()["message"]
        assert (await http.post("/models/echo", json={"text": "x"})).status_code == 200


async def test_streams_over_the_limit_are_refused_with_429(probe: Probe) -> None:
    async with (
        serve_http(make_app(probe), max_streams=1) as served,
        aconnect_sse(served.http, "POST", "/models/generate", json={"prompt": "t"}) as source,
    ):
        assert (await anext(source.aiter_sse())).data == '{"result":"t0"}'
        second = await served.http.post("/models/generate", json={"prompt": "u"})
        assert second.status_code == 429
        assert second.headers["retry-after"] == "1"
        assert "max_streams" in second.json()["message"]


async def test_server_streaming_is_one_event_per_item_then_end(probe: Probe) -> None:
    async with serve_http(make_app(probe)) as served:
        events = await events_of(served.http, "generate", prompt="t", max_tokens=3)
    assert events == [
        ("message", '{"result":"t0"}'),
        ("message", '{"result":"t1"}'),
        ("message", '{"result":"t2"}'),
        ("end", '{"items":3}'),
    ]


async def test_event_stream_headers_keep_proxies_from_buffering(probe: Probe) -> None:
    async with (
        serve_http(make_app(probe)) as served,
        served.http.stream(
            "POST", "/models/generate", json={"prompt": "t", "max_tokens": 1}
        ) as response,
    ):
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers["cache-control"] == "no-cache"


async def test_an_error_after_the_first_byte_is_an_error_event(probe: Probe) -> None:
    async with serve_http(make_app(probe)) as served:
        http = served.http
        events = await events_of(http, "fail-midway", after=2)
        assert events[:2] == [("message", '{"result":0}'), ("message", '{"result":1}')]
        name, data = events[2]
        assert name == "error" and len(events) == 3
        error = json.loads(data)
        assert error["code"] == "INTERNAL"
        assert re.fullmatch(
            r"model 'fail-midway' failed: ValueError: broke after 2 items "
            r"\(request id [0-9a-f]{16}\)",
            error["message"],
        )
        before_first = await http.post("/models/fail-midway", json={"after": 0})
        assert before_first.status_code == 500
        assert before_first.json()["code"] == "INTERNAL"
        assert (await events_of(http, "generate", prompt="a", max_tokens=1))[-1][0] == "end"


async def test_disconnect_closes_the_generator_within_one_item(probe: Probe) -> None:
    async with serve_http(make_app(probe)) as served:
        http = served.http
        async with aconnect_sse(http, "POST", "/models/generate", json={"prompt": "t"}) as source:
            received = 0
            async for _ in source.aiter_sse():
                received += 1
                if received == 3:
                    break
        await probe.wait_closed()
        assert probe.produced <= received + 2
        assert (await http.post("/models/echo", json={"text": "still up"})).status_code == 200


async def test_streams_from_a_generator_that_never_awaits_interleave(probe: Probe) -> None:
    names = ["a", "b", "c", "d"]
    async with serve_http(make_app(probe)) as served:
        async with anyio.create_task_group() as group:
            for name in names:
                group.start_soon(
                    functools.partial(events_of, served.http, "spin", name=name, count=20_000)
                )
    first = {name: probe.steps.index((name, 0)) for name in names}
    last = {name: probe.steps.index((name, 19_999)) for name in names}
    assert max(first.values()) < min(last.values()), (
        "one stream ran to its end before another began"
    )


async def test_gzip_streaming_decodes_each_event_as_it_arrives(probe: Probe) -> None:
    async with (
        serve_http(make_app(probe)) as served,
        served.http.stream(
            "POST", "/models/held", json={"first": "now"}, headers={"accept-encoding": "gzip"}
        ) as response,
    ):
        assert response.headers["content-encoding"] == "gzip"
        decoder = zlib.decompressobj(wbits=31)
        text = ""
        raw = response.aiter_raw()
        with anyio.fail_after(WAIT_S):  # a buffered event would never arrive: the model waits
            while "data:" not in text:
                text += decoder.decompress(await anext(raw)).decode()
        assert text == 'data: {"result":"now"}\n\n'
        probe.release()
        async for chunk in raw:
            text += decoder.decompress(chunk).decode()
        assert text.endswith('data: {"result":"after"}\n\nevent: end\ndata: {"items":2}\n\n')


async def test_unary_responses_are_gzipped_when_large_and_asked_for(probe: Probe) -> None:
    async with serve_http(make_app(probe)) as served:
        http = served.http
        big = await http.post("/models/echo", json={"text": "ab", "times": 2000})
        assert big.headers["content-encoding"] == "gzip"  # httpx asks for gzip by default
        assert big.json() == {"result": "ab" * 2000}
        small = await http.post("/models/echo", json={"text": "ab"})
        assert "content-encoding" not in small.headers


async def test_an_idle_stream_sends_keep_alive_comments(probe: Probe) -> None:
    async with (
        serve_http(make_app(probe), sse_keepalive=0.1) as served,
        served.http.stream("POST", "/models/quiet", json={}) as response,
    ):
        chunks = response.aiter_text()
        body = ""
        with anyio.fail_after(WAIT_S):  # the model sends nothing until two comments came
            while body.count(": keep-alive\n\n") < 2:
                body += await anext(chunks)
        probe.release()
        body += "".join([chunk async for chunk in chunks])
    assert body.startswith(": keep-alive\n\n: keep-alive\n\n")
    assert body.endswith('data: {"result":"finally"}\n\nevent: end\ndata: {"items":1}\n\n')


async def test_client_streams_are_newline_delimited_json(probe: Probe) -> None:
    async with serve_http(make_app(probe)) as served:
        http = served.http
        ok = await http.post("/models/total", content=b'{"numbers": 1}\n\n{"numbers": 2}\n')
        assert ok.json() == {"result": 3}

        async def chunks() -> AsyncIterator[bytes]:
            for piece in [b'{"numbers"', b": 40}\n", b'{"numbers": 2}']:
                yield piece

        assert (await http.post("/models/total", content=chunks())).json() == {"result": 42}
        bad = await http.post("/models/total", content=b'{"numbers": 1}\n{"numbers": "x"}\n')
        assert bad.status_code == 400
        assert bad.json()["message"].startswith("request line 2: field 'numbers'")


async def test_bidirectional_over_post_is_ndjson_in_and_events_out(probe: Probe) -> None:
    async with serve_http(make_app(probe)) as served:
        response = await served.http.post(
            "/models/words", content=b'{"lines": "a b"}\n{"lines": "c"}\n'
        )
        assert response.text == (
            'data: {"result":2}\n\ndata: {"result":1}\n\nevent: end\ndata: {"items":2}\n\n'
        )


async def test_bidirectional_over_a_websocket_keeps_state_per_stream() -> None:
    async with serve_http(tracker_app) as served:
        url = f"ws://127.0.0.1:{served.server.http_port}/models/track/ws"
        async with websockets.asyncio.client.connect(url) as socket:
            await socket.send(json.dumps({"frames": {"detections": [{"x": 0, "y": 0}]}}))
            first = json.loads(await socket.recv())
            await socket.send(json.dumps({"frames": {"detections": [{"x": 1, "y": 1}]}}))
            second = json.loads(await socket.recv())
            await socket.send("")
            await socket.wait_closed()
        assert first["result"]["tracks"][0]["track_id"] == 1
        assert second["result"] == {
            "frame": 2,
            "tracks": [{"track_id": 1, "x": 1.0, "y": 1.0, "age": 2}],
        }
        assert socket.close_code == 1000
        async with websockets.asyncio.client.connect(url) as socket:
            await socket.send(json.dumps({"frames": {"detections": [{"x": "left"}]}}))
            error = json.loads(await socket.recv())
            await socket.wait_closed()
        assert error["error"]["code"] == "INVALID_ARGUMENT"
        assert "frames.detections[0].x" in error["error"]["message"]
        assert socket.close_code == 4000 + Status.INVALID_ARGUMENT.value


async def test_models_openapi_and_health_describe_the_schema(probe: Probe) -> None:
    async with serve_http(make_app(probe)) as served:
        http = served.http
        listing = (await http.get("/models")).json()
        by_name = {model["name"]: model for model in listing["models"]}
        assert by_name["echo"]["shape"] == "unary"
        assert by_name["echo"]["request"]["required"] == ["text"]
        assert by_name["echo"]["request"]["properties"]["times"] == {
            "type": "integer",
            "default": 1,
        }
        assert by_name["generate"]["response_content_type"] == "text/event-stream"
        assert by_name["total"]["request_content_type"] == "application/x-ndjson"
        assert (await http.get("/models/echo")).json() == by_name["echo"]
        missing = await http.get("/models/nope")
        assert missing.status_code == 404 and "no model named 'nope'" in missing.json()["message"]
        document = (await http.get("/openapi.json")).json()
        assert document["openapi"].startswith("3.1")
        operation = document["paths"]["/models/echo"]["post"]
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.removeprefix("#/components/schemas/") in document["components"]["schemas"]
        assert operation["summary"] == "Repeat the text."
        assert (await http.get("/health/live")).json() == {"status": "live"}
        ready = await http.get("/health/ready")
        assert (ready.status_code, ready.json()) == (200, {"status": "serving"})


async def test_a_drain_ends_a_running_stream_with_an_unavailable_event(probe: Probe) -> None:
    async with serve_http(make_app(probe)) as served:
        async with aconnect_sse(
            served.http, "POST", "/models/generate", json={"prompt": "t"}
        ) as source:
            events = source.aiter_sse()
            assert (await anext(events)).data == '{"result":"t0"}'
            drain = asyncio.ensure_future(served.server.drain(grace=0.1))
            rest = [event async for event in events]
            await drain
        assert rest[-1].event == "error"
        assert json.loads(rest[-1].data)["code"] == "UNAVAILABLE"
        await probe.wait_closed()


async def test_grpc_and_http_calls_share_one_batcher() -> None:
    app = BlazeApp()
    batches: list[list[int]] = []

    @app.model("double", batch=Batching(max_size=6, max_wait_s=59))
    async def double(number: list[int]) -> list[int]:
        """A batch starts only when full: six calls, whichever transport they came by."""
        batches.append(sorted(number))
        return [2 * n for n in number]

    async with serve_http(app) as served:
        over_http = [served.http.post("/models/double", json={"number": i}) for i in range(3)]
        over_grpc = [served.client.predict("double", number=i) for i in (10, 11, 12)]
        results = await asyncio.gather(*over_http, *over_grpc)
    assert [r.json()["result"] for r in results[:3]] == [0, 2, 4]
    assert results[3:] == [20, 22, 24]
    assert batches == [[0, 1, 2, 10, 11, 12]]  # one batch held the calls of both transports


async def test_app_asgi_runs_in_another_server_with_its_lifespan() -> None:
    app = BlazeApp()
    state: dict[str, str] = {}

    @app.lifespan
    async def load() -> AsyncIterator[None]:
        state["greeting"] = "hello"
        yield
        state.clear()

    @app.model("greet")
    def greet(name: str) -> str:
        return f"{state['greeting']} {name}"

    sock = bind_tcp("127.0.0.1", 0, reuse_port=False)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app.asgi(), log_config=None, lifespan="on"))
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:  # the socket already listens: the call waits in its backlog until uvicorn has started
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            answer = await http.post("/models/greet", json={"name": "ada"})
            assert answer.json() == {"result": "hello ada"}
    finally:
        server.should_exit = True
        await task
    assert state == {}


async def test_results_the_schema_does_not_allow_are_internal_errors(probe: Probe) -> None:
    async with serve_http(make_app(probe), max_response_bytes=1000) as served:
        http = served.http
        wrong = await http.post("/models/wrong-type", json={"text": "a"})
        assert wrong.status_code == 500
        assert wrong.json()["message"] == (
            "model 'wrong-type' returned an invalid result: expected int64, got str "
            f"(request id {wrong.headers['x-request-id']})"
        )
        too_big_first = await http.post("/models/big", json={"sizes": [5000]})
        assert too_big_first.status_code == 429
        assert "max_response_bytes" in too_big_first.json()["message"]
        events = await events_of(http, "big", sizes=[1, 5000])
        assert events[0] == ("message", '{"result":"x"}')
        assert events[1][0] == "error"
        assert json.loads(events[1][1])["code"] == "RESOURCE_EXHAUSTED"


async def test_context_sees_the_headers_and_the_deadline(probe: Probe) -> None:
    async with serve_http(make_app(probe)) as served:
        answer = await served.http.post(
            "/models/whoami", json={}, headers={"x-user": "ada", "x-request-timeout": "3"}
        )
        assert answer.json() == {"result": "ada True"}


async def test_while_loading_calls_get_503_and_ready_says_loading() -> None:
    app = BlazeApp()
    loading, loaded = asyncio.Event(), asyncio.Event()

    @app.lifespan
    async def load() -> AsyncIterator[None]:
        loading.set()  # the ports are open by now: hooks run after they are bound
        await loaded.wait()
        yield

    @app.model("ping")
    async def ping() -> str:
        return "pong"

    server = BlazeServer(app, port=0, http_port=0)
    starting = asyncio.ensure_future(server.start())
    try:
        with anyio.fail_after(5):
            await loading.wait()
        assert server.phase is Phase.LOADING
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
            early = await http.post("/models/ping", json={})
            assert early.status_code == 503
            assert early.headers["retry-after"] == "1"
            assert "still loading" in early.json()["message"]
            ready = await http.get("/health/ready")
            assert (ready.status_code, ready.json()) == (503, {"status": "loading"})
            loaded.set()
            await starting
            assert (await http.post("/models/ping", json={})).json() == {"result": "pong"}
            assert (await http.get("/health/ready")).status_code == 200
    finally:
        loaded.set()
        await starting
        await server.close()


async def test_cors_lets_pages_from_the_listed_origins_call(probe: Probe) -> None:
    async with serve_http(make_app(probe), cors_origins="https://app.example") as served:
        preflight = await served.http.options(
            "/models/generate",
            headers={
                "origin": "https://app.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type, x-request-timeout",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        streamed = await served.http.post(
            "/models/generate",
            json={"prompt": "t", "max_tokens": 1},
            headers={"origin": "https://app.example"},
        )
        assert streamed.headers["access-control-allow-origin"] == "https://app.example"
        assert streamed.text.startswith('data: {"result":"t0"}')
        stranger = await served.http.post(
            "/models/echo", json={"text": "a"}, headers={"origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in stranger.headers
    async with serve_http(make_app(probe)) as served:  # off unless asked for
        plain = await served.http.post(
            "/models/echo", json={"text": "a"}, headers={"origin": "https://app.example"}
        )
        assert "access-control-allow-origin" not in plain.headers


async def test_a_bad_line_of_a_bidi_body_is_a_400_even_while_the_model_reads() -> None:
    app = BlazeApp()

    @app.model("collect")
    async def collect(xs: AsyncIterator[int]) -> AsyncIterator[int]:
        got = []
        async for x in xs:  # reads all its input before answering, slowly
            await asyncio.sleep(0.2)
            got.append(x)
        for x in got:
            yield x

    async with serve_http(app, sse_keepalive=0.01) as served:
        body = b'{"xs": 1}\n{"xs": "two"}\n'  # all of it in one chunk
        answer = await served.http.post("/models/collect", content=body)
        assert answer.status_code == 400
        assert "request line 2" in answer.json()["message"]
        ok = await served.http.post("/models/collect", content=b'{"xs": 1}\n{"xs": 2}\n')
        assert ok.status_code == 200 and ok.text.count("data: {") == 3


def test_app_asgi_serves_through_one_lifespan_after_another() -> None:
    app = BlazeApp()
    events: list[str] = []

    @app.lifespan
    def weights() -> Iterator[None]:
        events.append("load")
        yield
        events.append("release")

    @app.model("double", batch=Batching(max_size=4))
    def double(x: list[int]) -> list[int]:
        return [2 * value for value in x]

    asgi = app.asgi()

    async def one_life() -> tuple[object, list[str]]:
        async with (
            asgi.router.lifespan_context(asgi),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://t") as http,
        ):
            answer = (await http.post("/models/double", json={"x": 21})).json()
        return answer, list(events)  # the lifespan's end has released the weights

    # each life on an event loop of its own, as a test client or a restarted server runs it
    first, second = asyncio.run(one_life()), asyncio.run(one_life())
    assert first == ({"result": 42}, ["load", "release"])
    assert second == ({"result": 42}, ["load", "release", "load", "release"])


async def test_asgi_of_a_started_server_is_refused() -> None:
    app = BlazeApp()

    @app.model("one")
    def one() -> int:
        return 1

    async with BlazeServer(app, port=0) as server:
        lifespan = server.asgi().router.lifespan_context
        with pytest.raises(RuntimeError, match="already serves"):
            async with lifespan(server.asgi()):
                pass


async def test_an_oversized_body_is_413_without_retry_after(probe: Probe) -> None:
    async def parts() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for part in (b'{"text": "', b"x" * 200, b'"}'):
            yield part

    async with serve_http(make_app(probe), max_request_bytes=100) as served:
        declared = await served.http.post("/models/echo", json={"text": "x" * 200})
        chunked = await served.http.post("/models/echo", content=parts())
    for big in (declared, chunked):
        assert big.status_code == 413
        assert "retry-after" not in big.headers
        assert big.json()["code"] == "RESOURCE_EXHAUSTED"
        assert "max_request_bytes" in big.json()["message"]
