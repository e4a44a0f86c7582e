"""The exception hierarchy: every mistake a user can make reads like advice on how to fix it."""

from __future__ import annotations

__all__ = ("BlazeError", "DefinitionError", "TargetError")


class BlazeError(Exception):
    """Base class of every error blazerpc raises on purpose."""


class DefinitionError(BlazeError, TypeError):
    """A model cannot be served as written; raised when it is decorated, never at request time.

    The message names the model, the function, the parameter, the problem and the fix.
    """


class TargetError(BlazeError):
    """A `module:attr` target given to the command line does not lead to a BlazeApp."""
