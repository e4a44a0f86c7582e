"""TLS: the server's contexts for gRPC and HTTP, and a client's.

gRPC over TLS needs ALPN to select `h2`: grpcio (and every grpc-core client) refuses a server
that selects nothing, and grpclib sets none on the server side. With a client CA, the server
requires a certificate from every client and verifies it against that CA (mTLS).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from blazerpc.config import ConfigError, ServerConfig, env_name, flag_name

__all__ = ("ServerTls", "client_context")


@dataclass(frozen=True, slots=True)
class ServerTls:
    """The server's certificate chain and key, and the CA its clients' certificates need."""

    cert: str
    key: str
    client_ca: str | None = None

    @classmethod
    def of(cls, config: ServerConfig) -> ServerTls | None:
        """The TLS settings of `config`, or None when it serves plaintext."""
        if config.tls_cert is None or config.tls_key is None:
            return None
        return cls(config.tls_cert, config.tls_key, config.tls_client_ca)

    def context(self, *, alpn: list[str]) -> ssl.SSLContext:
        """A server context offering the protocols in `alpn`; files are read now.

        A missing or unreadable file is a ConfigError naming its option.
        """
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        _readable(self.cert, "tls_cert")
        _readable(self.key, "tls_key")
        try:  # a password callback, so an encrypted key fails here instead of prompting
            context.load_cert_chain(self.cert, self.key, password=_no_password)
        except _EncryptedKeyError:
            raise ConfigError(
                f"option {flag_name('tls_key')}: {self.key!r} is encrypted; the server cannot "
                "ask for its passphrase. Give it the key decrypted (openssl pkey -in KEY -out "
                "PLAIN), kept readable by the server alone."
            ) from None
        except (ssl.SSLError, OSError) as err:
            raise ConfigError(
                f"options {flag_name('tls_cert')} and {flag_name('tls_key')}: {self.cert!r} and "
                f"{self.key!r} are not a PEM certificate chain and its private key "
                f"({_reason(err)})."
            ) from None
        if self.client_ca is not None:
            _readable(self.client_ca, "tls_client_ca")
            try:
                context.load_verify_locations(cafile=self.client_ca)
            except (ssl.SSLError, OSError) as err:
                raise ConfigError(
                    f"option {flag_name('tls_client_ca')}: {self.client_ca!r} holds no PEM CA "
                    f"certificate ({_reason(err)})."
                ) from None
            context.verify_mode = ssl.CERT_REQUIRED
        context.set_alpn_protocols(alpn)
        return context


def client_context(
    ca: str | None = None, cert: str | None = None, key: str | None = None
) -> ssl.SSLContext:
    """A gRPC client's context: trust `ca` (else the system's roots), offer `h2`.

    `cert` and `key` are the client's own certificate, for a server that requires one (mTLS).
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    if cert is not None:
        context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2"])
    return context


class _EncryptedKeyError(Exception):
    """The private key asks for a passphrase."""


def _no_password() -> str:
    raise _EncryptedKeyError


def _reason(err: Exception) -> str:
    return str(getattr(err, "reason", None) or err)


def _readable(path: str, option: str) -> None:
    if not Path(path).is_file():
        raise ConfigError(
            f"option {flag_name(option)} ({env_name(option)}): no such file {path!r}; "
            "give the path of a PEM file."
        )
