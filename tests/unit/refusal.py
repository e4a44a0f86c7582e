"""`refusal()`: decorate a function as a model, expect a DefinitionError, return its message.

Shared by the unit tests of the modules that refuse definitions (app, schema.signature,
schema.typemap, schema.spec); a helper, not a test module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from blazerpc import BlazeApp, DefinitionError
from blazerpc.schema.markers import Batching


def refusal(
    function: Callable[..., object],
    name: str = "embed",
    *,
    streaming: bool | None = None,
    batch: Batching | None = None,
    app: BlazeApp | None = None,
    version: str = "1",
) -> str:
    """Decorate `function` as model `name`; the DefinitionError's message, checked to name the
    model and where the function is defined (file and line), as every definition error does."""
    app = app or BlazeApp()
    with pytest.raises(DefinitionError) as err:
        app.model(name, streaming=streaming, batch=batch, version=version)(function)
    message = str(err.value)
    assert f"model {name!r}" in message
    assert f"({function.__qualname__} in " in message
    code = function.__code__
    assert f"{Path(code.co_filename).name}:{code.co_firstlineno})" in message
    return message
