"""Each rule lives in one place: a scan of the package's source pins where.

docs/architecture.md lists the rules; each test here fails, naming the file, when the rule's
text or logic shows up somewhere else.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import blazerpc

PACKAGE = Path(blazerpc.__file__).resolve().parent


def _sources() -> dict[str, str]:
    return {
        str(path.relative_to(PACKAGE)): path.read_text(encoding="utf-8")
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def _string_constants(source: str) -> list[str]:
    """The string literals of a module, docstrings and f-string parts included."""
    return [
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def _code_strings(source: str) -> list[str]:
    """String literals that are not docstrings."""
    tree = ast.parse(source)
    docstrings = {
        id(body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and (body := node.body)
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_rpc_names_are_made_only_in_naming() -> None:
    makers = {
        name
        for name, source in _sources().items()
        if any("Predict" in text for text in _code_strings(source))
    }
    assert makers == {"schema/naming.py"}


def test_rpc_paths_are_joined_only_in_naming() -> None:
    joined = re.compile(r"""f["']/\{""")
    assert {name for name, source in _sources().items() if joined.search(source)} == {
        "schema/naming.py"
    }


def test_the_unknown_model_message_is_worded_once() -> None:
    wording = {
        name
        for name, source in _sources().items()
        if any("there is no model named" in text for text in _string_constants(source))
    }
    assert wording == {"errors.py"}


def test_statuses_are_picked_only_where_allowed() -> None:
    """Server code picks a status through errors.to_status; the client and its discovery
    report what they saw; the HTTP table maps statuses, it does not pick them."""
    picked = re.compile(
        r"Status\.(?!OK\b)[A-Z_]+(?!\s*:)"  # Status.X, but not a key of the HTTP table
    )
    allowed = {"errors.py", "client.py", "remote/discovery.py", "http/answer.py"}
    pickers = {
        name for name, source in _sources().items() if picked.search(source) and name not in allowed
    }
    assert pickers == set()


def test_readiness_is_answered_in_one_place() -> None:
    asked = re.compile(r"phase is (not )?Phase\.SERVING")
    assert {name for name, source in _sources().items() if asked.search(source)} == {
        "runtime/admission.py"  # Admission.is_ready, which every readiness answer reads
    }
