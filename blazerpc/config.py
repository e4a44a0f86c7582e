"""ServerConfig: every server option, merged from defaults, `BLAZE_*` variables and CLI flags.

This is the one module that reads the environment. Each option has one name, used three ways:
the field `max_streams`, the flag `--max-streams` and the variable `BLAZE_MAX_STREAMS`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

import msgspec

from blazerpc.errors import BlazeError

__all__ = (
    "CLI_DEFAULTS",
    "ENV_PREFIX",
    "HELP",
    "ConfigError",
    "ServerConfig",
    "env_name",
    "flag_name",
)

ENV_PREFIX = "BLAZE_"
COMMAND_ENV_PREFIXES = ("BLAZE_RAY_",)
"""Variables of one command's own options (`blaze ray --address`), not server options."""
_MIB = 1024 * 1024

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]
"""A time limit; 0 turns it off."""
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class ConfigError(BlazeError, ValueError):
    """An option has a bad value; the message names the flag and the variable to fix."""


class ServerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a server listens, limits and shuts down; frozen, validated when built."""

    host: str = "127.0.0.1"
    port: Port = 50051
    workers: Annotated[int, msgspec.Meta(ge=1, le=512)] = 1
    grace: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    max_request_bytes: Annotated[int, msgspec.Meta(ge=1)] = 4 * _MIB
    max_response_bytes: Annotated[int, msgspec.Meta(ge=1)] = 4 * _MIB
    max_streams: Annotated[int, msgspec.Meta(ge=1)] = 1024
    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1024 * 1024)] = 64 * 1024
    max_connection_streams: Annotated[int, msgspec.Meta(ge=1)] = 100
    max_calls: Annotated[int, msgspec.Meta(ge=1)] = 4096
    handshake_timeout: Seconds = 10.0
    header_timeout: Seconds = 10.0
    message_timeout: Seconds = 30.0
    idle_timeout: Seconds = 300.0
    keepalive_interval: Seconds = 60.0
    keepalive_timeout: Annotated[float, msgspec.Meta(gt=0)] = 20.0
    max_connection_age: Seconds = 0.0
    max_connection_age_grace: Annotated[float, msgspec.Meta(ge=0)] | None = None
    response_compression: Literal["off", "gzip"] = "off"
    reflection: bool = True
    open_inference: bool = True
    open_inference_stream: Literal["triton", "mlserver"] = "triton"
    metrics_port: Port | None = None
    http_port: Port | None = None
    sse_keepalive: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    cors_origins: str = ""
    log_level: LogLevel = "info"
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    api_key_file: str | None = None
    public_reflection: bool = False
    public_metrics: bool = False
    error_detail: Literal["full", "redacted"] = "full"
    log_format: Literal["text", "json"] = "text"

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            given, missing = (
                ("tls_cert", "tls_key") if self.tls_key is None else ("tls_key", "tls_cert")
            )
            raise ConfigError(
                f"option {flag_name(given)} needs {flag_name(missing)} ({env_name(missing)}) "
                "too: TLS takes a certificate chain and its private key, as PEM files."
            )
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError(
                f"option {flag_name('tls_client_ca')} verifies client certificates over TLS: "
                f"give {flag_name('tls_cert')} and {flag_name('tls_key')} too."
            )

    @property
    def cors_origin_list(self) -> list[str]:
        """`cors_origins` as a list: `https://a.example, https://b.example` -> two origins."""
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    def replace(self, **options: Any) -> ServerConfig:
        """A copy with `options` changed, validated like the rest."""
        return _validated(msgspec.structs.asdict(self) | options, source=_as_field)

    @classmethod
    def load(
        cls,
        flags: Mapping[str, Any],
        environ: Mapping[str, str] | None = None,
        *,
        defaults: Mapping[str, Any] | None = None,
    ) -> ServerConfig:
        """Defaults, overridden by `BLAZE_*` variables, overridden by the flags given.

        `flags` holds only the options set on the command line (unset ones are absent or None).
        `defaults` replace the library's own (`blaze serve` passes CLI_DEFAULTS).
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = dict(defaults or {}) | _from_environ(environ)
        values |= {name: value for name, value in flags.items() if value is not None}
        given_in_env = {name for name in values if name not in flags or flags[name] is None}
        return _validated(values, source=lambda name: _describe(name, values, given_in_env))


CLI_DEFAULTS: dict[str, Any] = {"error_detail": "redacted"}
"""Where `blaze serve` differs from BlazeServer: a server run from the command line faces
callers it does not know, so an INTERNAL error keeps the exception's text in the log."""

HELP = {
    "host": "Address to listen on; 0.0.0.0 listens on every interface.",
    "port": "Port to listen on; 0 picks a free one (printed on the first line).",
    "workers": "Processes serving the port (SO_REUSEPORT), each loading the models itself.",
    "grace": "Seconds running calls get to finish after SIGTERM before they are ended.",
    "max_request_bytes": "Largest request message; a larger one gets RESOURCE_EXHAUSTED unread.",
    "max_response_bytes": "Largest response message; a larger result fails its call the same way.",
    "max_streams": "Streaming calls open at once (from their first message), all connections; "
    "more are refused.",
    "max_header_bytes": "Largest request metadata (gRPC) or head (HTTP): RESOURCE_EXHAUSTED, 431.",
    "max_connection_streams": "gRPC calls open at once on one connection (HTTP/2 SETTINGS).",
    "max_calls": "gRPC calls held at once, all connections, counted from their headers (unary "
    "too): more get RESOURCE_EXHAUSTED.",
    "handshake_timeout": "Seconds a new connection has for its TLS handshake and HTTP/2 preface "
    "(0: no limit).",
    "header_timeout": "Seconds a request's headers may take to arrive in full (0: no limit).",
    "message_timeout": "Seconds a request message that has started may go without a byte "
    "arriving: DEADLINE_EXCEEDED, 408 (0: no limit).",
    "idle_timeout": "Seconds a gRPC connection with no call open is kept before GOAWAY "
    "(0: forever).",
    "keepalive_interval": "Seconds between HTTP/2 PINGs that check a gRPC connection's peer is "
    "alive (0: no pings).",
    "keepalive_timeout": "Seconds a PING may go unanswered before the connection is closed.",
    "max_connection_age": "Seconds (+-10 %) after which a gRPC connection gets GOAWAY, so "
    "clients reconnect and spread over replicas behind an L4 balancer (0: never).",
    "max_connection_age_grace": "Seconds the calls of a connection past its age get to finish; "
    "none: as long as they run.",
    "response_compression": "gzip: compress responses for callers that accept it "
    "(grpc-accept-encoding). Compressed requests are always accepted.",
    "reflection": "Serve gRPC reflection, so grpcurl and Postman need no .proto file.",
    "open_inference": "Serve the Open Inference Protocol (KServe v2) next to the typed service.",
    "open_inference_stream": "The messages of ModelStreamInfer: triton (ModelStreamInferResponse, "
    "as Triton and OpenVINO send) or mlserver (ModelInferResponse, as MLServer's clients read).",
    "metrics_port": "Serve Prometheus metrics on http://HOST:PORT/metrics (blazerpc[metrics]).",
    "http_port": "Also serve the models over HTTP/JSON and Server-Sent Events on this port.",
    "sse_keepalive": "Seconds of silence after which an event stream sends a keep-alive comment.",
    "cors_origins": "Web origins whose pages may call the HTTP gateway: comma-separated, or *.",
    "log_level": "Logging level; info logs one access line per call.",
    "tls_cert": "Serve gRPC and HTTP over TLS with this PEM certificate chain (needs --tls-key).",
    "tls_key": "The PEM private key of --tls-cert.",
    "tls_client_ca": "Require a client certificate signed by this PEM CA (mutual TLS).",
    "api_key_file": "Require a key on every call (`authorization: Bearer KEY`): one a line.",
    "public_reflection": "With --api-key-file, serve gRPC reflection to callers without a key too.",
    "public_metrics": "With --api-key-file, serve /metrics to scrapers without a key too.",
    "error_detail": "What an INTERNAL error tells the caller: full (the exception's text) or "
    "redacted (the model and request id; the traceback is in the log).",
    "log_format": "Log lines as text, or as one JSON object a line (json) for log collectors.",
}
"""What each option does: `blaze serve --help` shows it, docs/deployment.md lists it."""


def flag_name(field: str) -> str:
    """`max_streams` -> `--max-streams`."""
    return "--" + field.replace("_", "-")


def env_name(field: str) -> str:
    """`max_streams` -> `BLAZE_MAX_STREAMS`."""
    return ENV_PREFIX + field.upper()


def _from_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The `BLAZE_*` variables as field values; an unknown one is a typo, and an error."""
    fields = ServerConfig.__struct_fields__
    values = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key.startswith(COMMAND_ENV_PREFIXES):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in fields:
            known = [env_name(field) for field in fields]
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"Did you mean {close[0]}? " if close else ""
            raise ConfigError(
                f"environment variable {key} is not a blazerpc option. {hint}"
                f"Known: {', '.join(known)}."
            )
        values[name] = value
    return values


def _validated(values: dict[str, Any], *, source: Callable[[str], str]) -> ServerConfig:
    try:
        return msgspec.convert(values, ServerConfig, strict=False)
    except msgspec.ValidationError as err:
        problem, _, path = str(err).rpartition(" - at `$.")
        name = path.rstrip("`")
        if name not in ServerConfig.__struct_fields__:
            raise ConfigError(str(err)) from None
        problem = _lower_first(problem).replace(", got `str`", "")
        raise ConfigError(f"{source(name)}: {problem}.") from None


def _describe(name: str, values: Mapping[str, Any], given_in_env: set[str]) -> str:
    where = env_name(name) if name in given_in_env else flag_name(name)
    return f"option {flag_name(name)} ({where}={values[name]!r})"


def _as_field(name: str) -> str:
    return f"option {flag_name(name)} ({name}=)"


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
