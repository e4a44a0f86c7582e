"""errors.to_status: the one table from exception to gRPC status, as STYLE.md gives it."""

from __future__ import annotations

import logging

import pytest

from blazerpc.errors import (
    BlazeError,
    DefinitionError,
    ModelError,
    ResultError,
    Status,
    UnknownModelError,
    WireError,
    to_status,
)


def test_bad_input_is_invalid_argument_with_the_field() -> None:
    assert to_status(WireError("field 'x' is required."), "m") == (
        Status.INVALID_ARGUMENT,
        "field 'x' is required.",
    )


def test_an_unknown_model_is_not_found() -> None:
    error = UnknownModelError("there is no model named 'x'; this server serves: a, b.")
    assert to_status(error, "x") == (Status.NOT_FOUND, str(error))


def test_a_model_error_keeps_its_status_and_message() -> None:
    error = ModelError(Status.NOT_FOUND, "voice 'nope' is unknown")
    assert to_status(error, "speak") == (Status.NOT_FOUND, "voice 'nope' is unknown")


def test_anything_else_is_internal_naming_the_model_and_logged_with_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        raise ValueError("bad shape")
    except ValueError as error:
        with caplog.at_level(logging.INFO):
            assert to_status(error, "embed") == (
                Status.INTERNAL,
                "model 'embed' failed: ValueError: bad shape",
            )
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None


def test_a_bad_result_is_internal_and_says_so() -> None:
    status, message = to_status(ResultError("field 'result': expected Box, got dict"), "detect")
    assert status is Status.INTERNAL
    assert message == (
        "model 'detect' returned an invalid result: field 'result': expected Box, got dict"
    )


def test_expected_failures_log_at_info_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        to_status(WireError("field 'x' is required."), "m")
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert record.exc_info is None


def test_the_hierarchy() -> None:
    assert issubclass(DefinitionError, TypeError)
    assert issubclass(WireError, ValueError)
    for error in (DefinitionError, WireError, ModelError, ResultError):
        assert issubclass(error, BlazeError)
