"""grpc/h2.py is the one door to grpclib's private names, and says when an upgrade broke it."""

from __future__ import annotations

import ast
from pathlib import Path

import grpclib.server
import pytest

from blazerpc.grpc import h2

PACKAGE = Path(h2.__file__).resolve().parents[1]
DOOR = Path(h2.__file__).resolve()


def test_the_installed_grpclib_has_every_private_name_the_door_uses() -> None:
    missing = h2.missing_internals()
    assert missing == [], (
        f"grpclib no longer has {', '.join(missing)}: blazerpc/grpc/h2.py was written for "
        f"grpclib {h2.GRPCLIB_RANGE} and h2 {h2.H2_RANGE}; adapt the door, or pin them."
    )


def test_a_removed_internal_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(grpclib.server.Server, "_protocol_factory")
    assert h2.missing_internals() == ["grpclib.server.Server._protocol_factory"]


def _private_grpclib_uses(path: Path) -> list[str]:
    """Imports of grpclib's private modules, and private attributes it is known to hide."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("grpclib"):
            if any(part.startswith("_") for part in node.module.split(".")):
                found.append(f"from {node.module} import")
        if isinstance(node, ast.Attribute) and node.attr in _GRPCLIB_PRIVATES:
            is_own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if not is_own:  # our classes may name their own attributes alike
                found.append(f".{node.attr}")
    return found


_GRPCLIB_PRIVATES = {
    "_stream",
    "_protocol_factory",
    "processor",
    "recv_data",
    "_acked_size",
    "_connection",
    "_receive_headers_frame",
    "_local_settings_acked",
    "_frame_dispatch_table",
    "_closed_streams",
    "_handle_data_on_closed_stream",
    "_stream_closed_by",
    "_receive_rst_stream_frame",
    "_update_header_buffer",
    "_headers_buffer",
    "_receive_settings_frame",
    "_receive_ping_frame",
    "_receive_goaway_frame",
    "_server_closed_fut",
    "_transport",
    "_send_initial_metadata_done",
    "_send_message_done",
    "_messages_sent",
    "_content_type",
    "_create_connection",
    "request_headers",
    "_codec",
    "_recv_type",
    "_data",
    "_unacked",
    "_tasks",
    "_getters",
}
"""The private names of grpclib and h2 objects the door wraps."""


def test_no_module_but_the_door_touches_grpclib_internals() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): uses
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != DOOR and (uses := _private_grpclib_uses(path))
    }
    assert offenders == {}
