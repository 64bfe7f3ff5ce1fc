"""Task status and results: what the workers record and ``GET /tasks/<id>`` reads.

``open_result_store(settings)`` picks the implementation from ``result_backend.url``:
``embedded`` is an SQLite file in the data directory shared by every local process.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from surge.errors import ConfigError

if TYPE_CHECKING:
    from surge.config.settings import Settings
    from surge.results.interface import ResultStore

RESULTS_DATABASE_NAME = "results.db"


def open_result_store(settings: Settings) -> ResultStore:
    """The configured result store. A relative ``data_dir`` is taken from the working
    directory, as the queue server takes it."""
    url = settings.result_backend.url
    ttl = settings.result_backend.ttl
    if url == "embedded":
        from surge.results.sqlite import SqliteResultStore

        return SqliteResultStore(Path(settings.data_dir).resolve() / RESULTS_DATABASE_NAME, ttl)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from surge.results.redis_store import RedisResultStore

        return RedisResultStore(url, ttl)
    raise ConfigError([
        f"result_backend.url: expected 'embedded' or 'redis://host:port/db', got {url!r}"
    ])
