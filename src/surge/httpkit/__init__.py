"""A minimal HTTP/1.1 server kit (uvloop + httptools) for full-body services."""

from surge.httpkit.server import (
    SimpleHandler,
    SimpleRequest,
    SimpleResponse,
    SimpleServer,
    shutdown_simple_server,
    start_simple_server,
)

__all__ = [
    "SimpleHandler",
    "SimpleRequest",
    "SimpleResponse",
    "SimpleServer",
    "shutdown_simple_server",
    "start_simple_server",
]
