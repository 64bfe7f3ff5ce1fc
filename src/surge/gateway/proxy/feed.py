"""Follows the supervisor's list of targets: ``GET {admin}/v1/targets?wait=30&version=V``
answers when the list differs from version V (a long poll), with
``{"version": int, "pools": {"web": [{"address": "HOST:PORT", "state": "active"}]}}``.
The admin API wants its token: ``surge up`` hands it to each gateway in ``SURGE_ADMIN_TOKEN``."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from urllib.parse import urlsplit

import orjson

from surge.admin_token import ADMIN_TOKEN_ENV, bearer_header
from surge.gateway.proxy.errors import ProxyError
from surge.gateway.proxy.upstream import fetch

log = logging.getLogger("surge.gateway.proxy")

Entries = dict[str, list[tuple[str, str]]]  # pool name → [(address, state)]
LONG_POLL_WAIT = 30
RETRY_DELAY = 1.0


def parse_targets(document: bytes) -> tuple[int, Entries]:
    """The version and the targets of each pool in the admin API's answer."""
    data = orjson.loads(document)
    version = data["version"]
    if not isinstance(version, int):
        raise ValueError(f"version must be an integer, got {version!r}")
    pools: Entries = {}
    for pool, targets in data.get("pools", {}).items():
        pools[pool] = [(str(t["address"]), str(t.get("state", "active"))) for t in targets]
    return version, pools


class TargetsFeed:
    def __init__(self, admin_url: str, apply: Callable[[Entries], None],
                 *, wait: int = LONG_POLL_WAIT, token: str | None = None) -> None:
        parts = urlsplit(admin_url if "//" in admin_url else f"http://{admin_url}")
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"--targets-from must be an http://HOST:PORT URL, got {admin_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.base_path = parts.path.rstrip("/")
        self.apply = apply
        self.wait = wait
        token = token if token is not None else os.environ.get(ADMIN_TOKEN_ENV)
        self._headers = (bearer_header(token),) if token else ()
        self.version: int | None = None
        self.first_answer = asyncio.Event()

    async def poll_once(self) -> None:
        # The first request asks for the list as it is now; later ones wait for a change.
        query = "wait=0" if self.version is None else f"wait={self.wait}&version={self.version}"
        status, body = await fetch(self.host, self.port, f"{self.base_path}/v1/targets?{query}",
                                   timeout=self.wait + 10, headers=self._headers)
        if status != 200:
            raise ProxyError(f"targets feed answered {status}")
        version, pools = parse_targets(body)
        if version != self.version:
            self.version = version
            self.apply(pools)
        self.first_answer.set()

    async def run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except (ProxyError, OSError, TimeoutError, ValueError, KeyError, TypeError) as exc:
                log.warning("targets feed %s:%d: %s; retrying in %gs", self.host, self.port,
                            exc, RETRY_DELAY)
                await asyncio.sleep(RETRY_DELAY)

