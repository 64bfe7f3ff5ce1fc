"""How the CLI reaches a running ``surge up``: the admin API's address (``HOST:PORT``, as
``surge up --admin`` takes it, or a URL), its token, and calls that raise ``AdminCallError``
with a message fit for the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from surge.admin_token import ADMIN_TOKEN_ENV, bearer_header, caller_token
from surge.config.types import parse_host_port
from surge.errors import SurgeError
from surge.httpkit.client import HttpClient, HttpClientError
from surge.supervisor.specs import connectable

DEFAULT_ADMIN = "127.0.0.1:8081"
DEFAULT_DATA_DIR = ".surge"
CALL_TIMEOUT = 10.0


class AdminCallError(SurgeError):
    """The admin API could not be reached, refused the caller, or refused the call."""


def admin_base_url(value: str) -> str:
    """``http://HOST:PORT`` from ``HOST:PORT`` (0.0.0.0 → 127.0.0.1) or an http(s) URL."""
    if "://" in value:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected HOST:PORT or an http(s):// URL, got {value!r}")
        return value.rstrip("/")
    address = connectable(parse_host_port(value))
    host = f"[{address.host}]" if ":" in address.host else address.host
    return f"http://{host}:{address.port}"


class AdminClient:
    """Calls on one admin API with its token; ``close()`` when done."""

    def __init__(self, base_url: str, token: str, *, timeout: float = CALL_TIMEOUT) -> None:
        self.base_url = base_url
        self._headers = [bearer_header(token), ("Accept", "application/json")]
        self._http = HttpClient(timeout=timeout, connect_timeout=min(timeout, 5.0),
                                user_agent="surge-cli")

    @classmethod
    def for_cli(cls, admin: str, data_dir: str | Path) -> AdminClient:
        """From the CLI's ``--admin`` and ``--data-dir`` (``SURGE_ADMIN_TOKEN`` wins)."""
        return cls(admin_base_url(admin), caller_token(data_dir))

    async def get(self, path: str) -> dict[str, Any]:
        return await self._call("GET", path, b"")

    async def post(self, path: str, document: object) -> dict[str, Any]:
        return await self._call("POST", path, orjson.dumps(document),
                                [("Content-Type", "application/json")])

    async def _call(self, method: str, path: str, body: bytes,
                    headers: list[tuple[str, str]] | None = None) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        try:
            response = await self._http.request(method, url, headers=self._headers + (
                headers or []), body=body)
        except HttpClientError as exc:
            raise AdminCallError(f"cannot reach the admin API at {self.base_url}: {exc}") \
                from exc
        try:
            document = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            document = None
        if not isinstance(document, dict):
            raise AdminCallError(f"{method} {url} answered {response.status} with no JSON "
                                 f"document: is {self.base_url} surge's admin API?")
        if response.status in (401, 403):
            raise AdminCallError(f"the admin API at {self.base_url} refused the token "
                                 f"({response.status}: {document.get('error')}); the token is "
                                 f"read from --data-dir's admin.token or {ADMIN_TOKEN_ENV}")
        if response.status >= 400:
            raise AdminCallError(f"{method} {path}: {response.status} "
                                 f"{document.get('error', '')}".rstrip())
        return document

    async def close(self) -> None:
        await self._http.close()
