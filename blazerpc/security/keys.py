"""API keys: the keys a server accepts, and the one check every transport makes.

A caller sends `authorization: Bearer <key>` (gRPC metadata or an HTTP header). Keys are read
from a file, one a line, and kept only as SHA-256 digests compared in constant time, so they
never reach a log, an error message or a core dump in the clear.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from blazerpc.config import ConfigError, ServerConfig, env_name, flag_name
from blazerpc.errors import UnauthenticatedError

__all__ = ("INVALID_KEY", "ApiKeys")

_SCHEME = "bearer "
INVALID_KEY = "the API key sent is not valid."


class ApiKeys:
    """The keys a server accepts; `check()` raises UnauthenticatedError for anything else."""

    def __init__(self, keys: list[str]) -> None:
        self._digests = [_digest(key) for key in keys]

    @classmethod
    def of(cls, config: ServerConfig) -> ApiKeys | None:
        """The keys of `config.api_key_file`, read now; None when calls need no key."""
        if config.api_key_file is None:
            return None
        option = f"option {flag_name('api_key_file')} ({env_name('api_key_file')})"
        path = Path(config.api_key_file)
        try:
            text = path.read_text(encoding="utf-8-sig")  # a BOM is not part of the first key
        except (OSError, UnicodeDecodeError) as err:
            reason = getattr(err, "strerror", None) or "not UTF-8 text"
            raise ConfigError(f"{option}: cannot read {str(path)!r}: {reason}.") from None
        keys = [line.strip() for line in text.splitlines()]
        keys = [key for key in keys if key and not key.startswith("#")]
        if not keys:
            raise ConfigError(
                f"{option}: {str(path)!r} holds no key; write one key a line "
                "(blank lines and lines starting with # are skipped)."
            )
        return cls(keys)

    def accepts(self, key: str) -> bool:
        """Whether `key` is one of the keys, compared in constant time."""
        digest = _digest(key)
        matches = [hmac.compare_digest(digest, known) for known in self._digests]  # all, always
        return any(matches)

    def check(self, authorizations: list[str], *, header: str = "header") -> None:
        """Pass one valid `Bearer <key>`; else raise UnauthenticatedError saying what to send.

        `authorizations` are every `authorization` value the call carries: two are refused,
        since the key checked here and the one a hook or model reads could then differ.
        `header` is what the transport calls it ("metadata" over gRPC).
        """
        if len(authorizations) > 1:
            raise UnauthenticatedError(
                f"the call carries {len(authorizations)} authorization values; send one."
            )
        authorization = authorizations[0] if authorizations else None
        if authorization is None:
            raise UnauthenticatedError(
                f"this server requires an API key: send the {header} `authorization: Bearer <key>`."
            )
        if authorization[: len(_SCHEME)].lower() != _SCHEME:
            raise UnauthenticatedError(
                f"the authorization {header} must read `Bearer <key>`; it has another scheme."
            )
        if not self.accepts(authorization[len(_SCHEME) :].strip()):
            raise UnauthenticatedError(INVALID_KEY)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()
