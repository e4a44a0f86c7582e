"""What security costs per call: TLS, an API key, and the middleware hook.

    .venv/bin/python -m bench.security [--window 3] [--rounds 5]

Four blazerpc servers, each in its own process, measured in interleaved rounds on unary calls
at c=16: plain (no TLS, no key, no middleware), with one middleware that does nothing, over
TLS, and over TLS with an API key (grpcio sends it as call credentials). Certificates are made
at start by trustme. Reported as medians and as ratios to the plain server.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import grpc
import trustme

from bench.run import ECHO, SERVICE, cpu_seconds, for_window, interleaved

SERVERS = ("blazerpc", "blazerpc+middleware", "blazerpc+tls", "blazerpc+tls+key")
KEY = "bench-key-0123456789"


async def _load(channel: grpc.aio.Channel, pid: int, window: float) -> dict[str, float]:
    echo = channel.unary_unary(f"{SERVICE}/PredictEcho")
    metadata = (("authorization", f"Bearer {KEY}"),)

    async def one_echo() -> int:
        await echo(ECHO, metadata=metadata)
        return 1

    await for_window(1.0, 16, one_echo)  # warm-up: connections and TLS sessions set up
    cpu = cpu_seconds(pid)
    calls = await for_window(window, 16, one_echo)
    return {
        "unary rps, c=16": calls / window,
        "server CPU per unary call (us), c=16": (cpu_seconds(pid) - cpu) / calls * 1e6,
    }


def _credentials(where: Path) -> dict[str, grpc.ChannelCredentials]:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    issued.private_key_pem.write_to_path(str(where / "key.pem"))
    issued.cert_chain_pems[0].write_to_path(str(where / "cert.pem"))
    (where / "keys").write_text(f"{KEY}\n", encoding="utf-8")
    tls = grpc.ssl_channel_credentials(ca.cert_pem.bytes())
    return {"blazerpc+tls": tls, "blazerpc+tls+key": tls}


def table(results: dict[str, dict[str, float]]) -> str:
    """Medians per server, and each one's ratio to the plain server."""
    lines = [
        "| workload | " + " | ".join(SERVERS) + " | " + " | ".join(SERVERS[1:]) + " (/ plain) |",
        "|" + " --- |" * (2 * len(SERVERS)),
    ]
    for metric in results[SERVERS[0]]:
        cells = [f"{results[kind][metric]:,.1f}" for kind in SERVERS]
        ratios = [f"{results[k][metric] / results[SERVERS[0]][metric]:.2f}x" for k in SERVERS[1:]]
        lines.append(f"| {metric} | " + " | ".join([*cells, *ratios]) + " |")
    return "\n".join(lines)


def main() -> None:
    with tempfile.TemporaryDirectory() as pems:
        os.environ["BLAZE_BENCH_PEMS"] = pems  # the servers read their files from here
        credentials = _credentials(Path(pems))
        print(table(interleaved(SERVERS, _load, __doc__ or "", rounds=5, credentials=credentials)))


if __name__ == "__main__":
    main()
