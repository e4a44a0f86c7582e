"""This tree against an earlier revision: what a change cost per call, measured side by side.

    .venv/bin/python -m bench.compare REV [--kind blazerpc] [--window 3] [--rounds 5]

REV's tree is checked out in a temporary git worktree; its bench/servers.py and this tree's
serve the same `kind` of server, each in its own process, measured in interleaved rounds with
the hand-written grpclib servicer beside them (unary calls at c=16). Reported as medians, and
this tree's ratio to REV's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc

from bench.run import HERE, _over_channel, cpu_seconds, for_window, free_port, typed_calls

ROOT = HERE.parent


async def _load(channel: grpc.aio.Channel, pid: int, window: float) -> dict[str, float]:
    one_echo, _ = typed_calls(channel)
    await for_window(1.0, 16, one_echo)  # warm-up
    cpu = cpu_seconds(pid)
    calls = await for_window(window, 16, one_echo)
    return {
        "unary rps, c=16": calls / window,
        "server CPU per unary call (us), c=16": (cpu_seconds(pid) - cpu) / calls * 1e6,
    }


def _measure(tree: Path, kind: str, window: float) -> dict[str, float]:
    """`python -m bench.servers KIND PORT` run from `tree`, so it serves that tree's code."""
    port = free_port()
    command = [sys.executable, "-m", "bench.servers", kind, str(port)]
    with subprocess.Popen(command, cwd=tree, stdout=subprocess.PIPE, text=True) as server:
        try:
            assert server.stdout is not None
            assert server.stdout.readline().startswith("ready")
            return asyncio.run(_over_channel(port, server.pid, window, _load, None))
        finally:
            server.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("rev", help="the revision to compare with (a commit, a tag, HEAD~3)")
    parser.add_argument("--kind", default="blazerpc", help="a server kind of bench/servers.py")
    parser.add_argument("--window", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as where:
        before = Path(where) / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(before), args.rev],
            cwd=ROOT,
            check=True,
        )
        try:
            trees = {"grpclib": (ROOT, "grpclib"), args.rev: (before, args.kind)}
            trees["this tree"] = (ROOT, args.kind)
            rounds = [
                {name: _measure(tree, kind, args.window) for name, (tree, kind) in trees.items()}
                for _ in range(args.rounds)
            ]
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT)
    names = list(trees)
    print("| workload | " + " | ".join(names) + " | this tree / " + args.rev + " |")
    print("|" + " --- |" * (len(names) + 2))
    for metric in rounds[0]["grpclib"]:
        medians = [statistics.median(r[name][metric] for r in rounds) for name in names]
        cells = " | ".join(f"{m:,.1f}" for m in medians)
        print(f"| {metric} | {cells} | {medians[2] / medians[1]:.2f}x |")


if __name__ == "__main__":
    main()
