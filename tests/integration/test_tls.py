"""TLS and mutual TLS on both ports: stock grpcio, BlazeClient, curl and httpx as the clients.

Certificates are made at test time by trustme: a CA, the server's certificate for 127.0.0.1,
and a client certificate for mTLS.
"""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import anyio
import grpc
import httpx
import pytest
import trustme

from blazerpc import BlazeClient, BlazeServer, ConfigError, RpcError, ServerConfig
from blazerpc.testing import serve_app
from blazerpc.wire.protobuf import SchemaCodec
from tests.apps import pids

from .support import BLAZE, EVERY_SHAPE, FOUR_SHAPES, WAIT_S, blaze_serve, stock_every_shape

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Pems:
    """PEM files: the CA, the server's chain and key, a client's chain and key."""

    ca: str
    cert: str
    key: str
    client_cert: str
    client_key: str


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> Pems:
    where = tmp_path_factory.mktemp("pems")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@example.com")
    ca.cert_pem.write_to_path(str(where / "ca.pem"))
    server.private_key_pem.write_to_path(str(where / "key.pem"))
    server.cert_chain_pems[0].write_to_path(str(where / "cert.pem"))
    for extra in server.cert_chain_pems[1:]:
        extra.write_to_path(str(where / "cert.pem"), append=True)
    client.private_key_pem.write_to_path(str(where / "client-key.pem"))
    client.cert_chain_pems[0].write_to_path(str(where / "client-cert.pem"))
    return Pems(
        ca=str(where / "ca.pem"),
        cert=str(where / "cert.pem"),
        key=str(where / "key.pem"),
        client_cert=str(where / "client-cert.pem"),
        client_key=str(where / "client-key.pem"),
    )


APP = FOUR_SHAPES
SERVICE = "/blazerpc.InferenceService"


def _credentials(pems: Pems, *, with_client_cert: bool = False) -> grpc.ChannelCredentials:
    def read(path: str) -> bytes:
        return Path(path).read_bytes()

    if with_client_cert:
        return grpc.ssl_channel_credentials(
            read(pems.ca), read(pems.client_key), read(pems.client_cert)
        )
    return grpc.ssl_channel_credentials(read(pems.ca))


def _tls(pems: Pems, *, mutual: bool = False, **options: object) -> ServerConfig:
    client_ca = {"tls_client_ca": pems.ca} if mutual else {}
    return ServerConfig(tls_cert=pems.cert, tls_key=pems.key, **client_ca, **options)  # type: ignore[arg-type]


async def test_a_stock_grpcio_client_over_tls_calls_every_shape(pems: Pems) -> None:
    async with BlazeServer(APP, _tls(pems), port=0) as server:

        def calls() -> dict[str, object]:
            target = f"127.0.0.1:{server.port}"
            with grpc.secure_channel(target, _credentials(pems)) as channel:
                return stock_every_shape(channel)

        assert await anyio.to_thread.run_sync(calls) == EVERY_SHAPE


async def test_a_plaintext_client_is_refused_by_a_tls_server(pems: Pems) -> None:
    async with BlazeServer(APP, _tls(pems), port=0) as server:

        def call() -> grpc.StatusCode:
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                with pytest.raises(grpc.RpcError) as refused:
                    stock_every_shape(channel)
                return refused.value.code()

        assert await anyio.to_thread.run_sync(call) == grpc.StatusCode.UNAVAILABLE


async def test_blaze_client_and_serve_app_speak_tls(pems: Pems) -> None:
    async with serve_app(APP, config=_tls(pems), tls_ca=pems.ca) as client:
        assert await client.predict("add", a=1, b=2) == 3
        assert [n async for n in client.stream("count", n=2)] == [0, 1]


async def test_blaze_client_refuses_a_server_its_ca_did_not_sign(pems: Pems) -> None:
    stranger = trustme.CA()
    async with BlazeServer(APP, _tls(pems), port=0) as server:
        with stranger.cert_pem.tempfile() as other_ca:
            async with BlazeClient(
                port=server.port, app=APP, tls_ca=other_ca, timeout=WAIT_S
            ) as client:
                with pytest.raises(RpcError) as refused:
                    await client.predict("add", a=1, b=2)
    assert refused.value.status.name == "UNAVAILABLE"
    assert "certificate" in refused.value.message


async def test_mutual_tls_requires_a_client_certificate_on_the_first_call(pems: Pems) -> None:
    async with BlazeServer(APP, _tls(pems, mutual=True), port=0) as server:
        target = f"127.0.0.1:{server.port}"

        def without_certificate() -> grpc.StatusCode:
            with grpc.secure_channel(target, _credentials(pems)) as channel:
                with pytest.raises(grpc.RpcError) as refused:
                    stock_every_shape(channel)
                return refused.value.code()

        def with_certificate() -> dict[str, object]:
            credentials = _credentials(pems, with_client_cert=True)
            with grpc.secure_channel(target, credentials) as channel:
                return stock_every_shape(channel)

        assert await anyio.to_thread.run_sync(without_certificate) == grpc.StatusCode.UNAVAILABLE
        assert await anyio.to_thread.run_sync(with_certificate) == EVERY_SHAPE
        async with BlazeClient(
            port=server.port,
            app=APP,
            tls_ca=pems.ca,
            tls_cert=pems.client_cert,
            tls_key=pems.client_key,
            timeout=WAIT_S,
        ) as client:
            assert await client.predict("add", a=2, b=2) == 4


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", str(WAIT_S), *args],
        capture_output=True,
        text=True,
        check=False,
    )


async def test_the_http_gateway_speaks_tls_to_curl_and_httpx(pems: Pems) -> None:
    async with BlazeServer(APP, _tls(pems), port=0, http_port=0) as server:
        url = f"https://127.0.0.1:{server.http_port}/models/add"
        body = '{"a": 20, "b": 22}'
        answer = await anyio.to_thread.run_sync(
            lambda: _curl(
                "--cacert", pems.ca, "-H", "content-type: application/json", "-d", body, url
            )
        )
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout == '{"result":42}'
        plain = await anyio.to_thread.run_sync(
            lambda: _curl("-d", body, url.replace("https", "http"))
        )
        assert plain.returncode != 0  # a plaintext request gets no answer
        async with httpx.AsyncClient(verify=_httpx_context(pems)) as http:
            assert (await http.post(url, json={"a": 1, "b": 1})).json() == {"result": 2}


def _httpx_context(pems: Pems, *, with_client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pems.ca)
    if with_client_cert:
        context.load_cert_chain(pems.client_cert, pems.client_key)
    return context


async def test_mutual_tls_over_http_requires_a_client_certificate(pems: Pems) -> None:
    async with BlazeServer(APP, _tls(pems, mutual=True), port=0, http_port=0) as server:
        url = f"https://127.0.0.1:{server.http_port}/models/add"
        body = '{"a": 1, "b": 2}'
        refused = await anyio.to_thread.run_sync(
            lambda: _curl("--cacert", pems.ca, "-d", body, url)
        )
        assert refused.returncode != 0
        admitted = await anyio.to_thread.run_sync(
            lambda: _curl(
                "--cacert",
                pems.ca,
                "--cert",
                pems.client_cert,
                "--key",
                pems.client_key,
                "-H",
                "content-type: application/json",
                "-d",
                body,
                url,
            )
        )
        assert admitted.returncode == 0, admitted.stderr
        assert admitted.stdout == '{"result":3}'


async def test_a_missing_pem_file_fails_at_start_naming_its_option(pems: Pems) -> None:
    with pytest.raises(ConfigError, match=r"--tls-key \(BLAZE_TLS_KEY\): no such file"):
        async with BlazeServer(APP, tls_cert=pems.cert, tls_key="/nonexistent/key.pem", port=0):
            pass
    with pytest.raises(ConfigError, match="not a PEM certificate chain and its private key"):
        async with BlazeServer(APP, tls_cert=pems.cert, tls_key=pems.ca, port=0):
            pass


def test_a_certificate_without_its_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--tls-cert needs --tls-key"):
        ServerConfig(tls_cert="cert.pem")
    with pytest.raises(ConfigError, match="--tls-client-ca verifies client certificates"):
        ServerConfig(tls_client_ca="ca.pem")


def test_blaze_serve_with_workers_serves_tls(pems: Pems) -> None:
    classes = SchemaCodec(pids.app.schema).classes
    with blaze_serve(
        "tests/apps/pids.py:app",
        *("--workers", "2", "--tls-cert", pems.cert, "--tls-key", pems.key),
        new_session=True,
    ) as served:
        seen = set()
        for _ in range(6):  # new connections: the kernel spreads them over the workers
            with grpc.secure_channel(f"127.0.0.1:{served.port}", _credentials(pems)) as channel:
                whoami = channel.unary_stream(
                    f"{SERVICE}/PredictWhoami",
                    request_serializer=classes["WhoamiRequest"].SerializeToString,
                    response_deserializer=classes["WhoamiResponse"].FromString,
                )
                replies = list(whoami(classes["WhoamiRequest"](count=2), timeout=WAIT_S))
                seen |= {reply.result for reply in replies}
                assert len(replies) == 2
        assert served.process.pid not in seen  # the workers answered, over TLS


async def test_a_stock_client_over_tls_with_a_bearer_key_calls_every_shape(
    pems: Pems, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("k-over-tls\n", encoding="utf-8")
    async with BlazeServer(APP, _tls(pems), port=0, api_key_file=str(keys)) as server:
        target = f"127.0.0.1:{server.port}"

        def calls() -> tuple[dict[str, object], grpc.StatusCode]:
            keyed = grpc.composite_channel_credentials(
                _credentials(pems), grpc.access_token_call_credentials("k-over-tls")
            )
            with grpc.secure_channel(target, keyed) as channel:
                answers = stock_every_shape(channel)
            with grpc.secure_channel(target, _credentials(pems)) as channel:
                with pytest.raises(grpc.RpcError) as refused:
                    stock_every_shape(channel)
            return answers, refused.value.code()

        answers, refusal = await anyio.to_thread.run_sync(calls)
    assert answers == EVERY_SHAPE
    assert refusal == grpc.StatusCode.UNAUTHENTICATED


def test_an_encrypted_key_is_a_config_error_not_a_passphrase_prompt(
    pems: Pems, tmp_path: Path
) -> None:
    encrypted = tmp_path / "encrypted.pem"
    subprocess.run(
        ["openssl", "pkey", "-in", pems.key, "-aes256", "-passout", "pass:secret",
         "-out", str(encrypted)],
        check=True, capture_output=True,
    )  # fmt: skip
    result = subprocess.run(
        [BLAZE, "serve", "tests/apps/pids.py:app", "--port", "0", "--tls-cert", pems.cert,
         "--tls-key", str(encrypted)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "is encrypted; the server cannot ask for its passphrase" in result.stderr
