"""Queue client backends behind the ``QueueClient`` protocol, and ``open_queue_client``.

``queue_backend.url`` chooses the backend:

- ``embedded`` → http to the embedded server at ``http://{queue_backend.listen}``
- ``http://host:port`` / ``https://…`` → http to that SQS-compatible endpoint
  (both signed with the first of ``queue_backend.access_keys`` when there are any)
- ``sqs://REGION`` → Amazon SQS through aiobotocore (credentials from the usual chain)
- ``sqs+http://host:port`` / ``sqs+https://…`` → aiobotocore against that endpoint, signed
- ``redis://host:port/db`` (``rediss://`` for TLS) → the Redis backend
- ``memory://NAME`` → in-process queues, shared by every client opened with the same NAME

The optional backends (aws, redis) import their library only when chosen.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from surge.config.settings import QueueBackendSettings
from surge.errors import ConfigError
from surge.queue.client.batching import BatchingSender
from surge.queue.client.memory import MemoryQueueClient
from surge.queue.interface import QueueClient

__all__ = ["BatchingSender", "MemoryQueueClient", "open_queue_client"]

# memory:// queues by name: "in memory" means one process, so this is where they live.
_MEMORY_QUEUES: dict[str, MemoryQueueClient] = {}


def open_queue_client(settings: QueueBackendSettings) -> QueueClient:
    url = settings.url
    scheme = urlsplit(url).scheme if "://" in url else url
    if url == "embedded" or scheme in ("http", "https"):
        from surge.queue.client.http import HttpQueueClient
        from surge.queue.sigv4 import Credentials

        if url == "embedded":
            host, port = settings.listen
            if host in ("0.0.0.0", "::", ""):
                host = "127.0.0.1"  # listening on every interface: reach it on loopback
            url = f"http://{host}:{port}"
        key = settings.signing_key()
        credentials = None if key is None else \
            Credentials(key.id, key.secret_value(), settings.region)
        return HttpQueueClient(url, access_key_id=key.id if key else "surge",
                               region=settings.region, credentials=credentials)
    if scheme == "sqs":
        from surge.queue.client.aws import AwsQueueClient

        region = urlsplit(url).netloc or settings.region
        return AwsQueueClient(region)
    if scheme in ("sqs+http", "sqs+https"):
        from surge.queue.client.aws import AwsQueueClient

        return AwsQueueClient(settings.region, endpoint_url=url.removeprefix("sqs+"))
    if scheme in ("redis", "rediss", "unix"):
        from surge.queue.client.redis_backend import RedisQueueClient

        return RedisQueueClient(url, region=settings.region, account_id=settings.account_id)
    if scheme == "memory":
        shared = _MEMORY_QUEUES.setdefault(url, MemoryQueueClient(account_id=settings.account_id))
        return MemoryQueueClient(share_with=shared, account_id=settings.account_id)
    raise ConfigError([
        f"queue_backend.url: expected 'embedded', 'http(s)://host:port', 'sqs://REGION', "
        f"'sqs+https://endpoint', 'redis://host:port/db' or 'memory://name', got {url!r}"
    ])
