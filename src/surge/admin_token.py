"""The admin API's bearer token: made once per data directory, read by every caller.

``surge up`` creates ``DATA_DIR/admin.token`` (32 random bytes, URL-safe base64, mode 0600)
at its first start and keeps it across restarts. Callers present it as
``Authorization: Bearer TOKEN``: the CLI reads it from the data directory or from
``SURGE_ADMIN_TOKEN`` (for a remote admin API), and the gateways ``surge up`` starts get it in
that variable, never on their command line (which any user sees in ``ps``).
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from surge.errors import SurgeError
from surge.private_files import ensure_private_file, read_private_file

TOKEN_FILE_NAME = "admin.token"
ADMIN_TOKEN_ENV = "SURGE_ADMIN_TOKEN"
_TOKEN_BYTES = 32
_MIN_TOKEN_LENGTH = 16  # a shorter token in the file or the variable is refused, not used
_MISSING_HINT = (": is this the data directory of a surge up that has started? (or set "
                 f"{ADMIN_TOKEN_ENV})")


class AdminTokenError(SurgeError):
    """The token file cannot be created or read, or is open to other users."""


def token_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / TOKEN_FILE_NAME


def ensure_token(data_dir: str | Path) -> str:
    """The data directory's token, created (mode 0600) if it has none yet."""
    path = token_path(data_dir)
    text = ensure_private_file(path, lambda: secrets.token_urlsafe(_TOKEN_BYTES),
                               "admin token", AdminTokenError, _MISSING_HINT)
    return _checked(text, str(path))


def read_token_file(path: Path) -> str:
    """The token in ``path``; refused if other users may read it (as ssh refuses a key)."""
    return _checked(read_private_file(path, "admin token", AdminTokenError, _MISSING_HINT),
                    str(path))


def caller_token(data_dir: str | Path, environ: Mapping[str, str] | None = None) -> str:
    """The token a CLI call presents: ``SURGE_ADMIN_TOKEN`` if set, else the data dir's."""
    environ = os.environ if environ is None else environ
    from_env = environ.get(ADMIN_TOKEN_ENV)
    if from_env:
        return _checked(from_env.strip(), ADMIN_TOKEN_ENV)
    return read_token_file(token_path(data_dir))


def bearer_header(token: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {token}")


def presented_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, or None for any other header."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def token_matches(expected: str, presented: str) -> bool:
    """Constant-time comparison, so timing tells nothing about how much of it was right."""
    return hmac.compare_digest(expected.encode("latin-1", "replace"),
                               presented.encode("latin-1", "replace"))


def _checked(token: str, source: str) -> str:
    if len(token) < _MIN_TOKEN_LENGTH:
        raise AdminTokenError(f"the admin token in {source} is empty or too short "
                              f"({len(token)} characters, need at least {_MIN_TOKEN_LENGTH})")
    return token
