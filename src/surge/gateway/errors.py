"""Errors of the gateway's HTTP layer, each carrying the status the client gets.

A handler or the server raises one of these; the connection answers with ``http_status``
(when no response byte has gone out yet) and closes when ``close_connection`` is set.
"""

from __future__ import annotations

from surge.errors import SurgeError


class GatewayHttpError(SurgeError):
    """A request the gateway refuses; ``http_status`` is what the client is told."""

    http_status = 400
    close_connection = False

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__doc__ or "")


class BadRequest(GatewayHttpError):
    """The request is malformed or its framing is ambiguous."""

    http_status = 400
    close_connection = True


class NotFound(GatewayHttpError):
    """No route or resource matches."""

    http_status = 404


class RequestTimeout(GatewayHttpError):
    """The client was too slow to send the request head or body."""

    http_status = 408
    close_connection = True


class BodyTooLarge(GatewayHttpError):
    """The request body is larger than allowed."""

    http_status = 413
    close_connection = True


class HeadersTooLarge(GatewayHttpError):
    """The request line and headers are larger than allowed."""

    http_status = 431
    close_connection = True


class VersionNotSupported(GatewayHttpError):
    """The request line names an HTTP version other than 1.0 and 1.1."""

    http_status = 505
    close_connection = True


class MethodNotImplemented(GatewayHttpError):
    """A method the gateway cannot serve on any route (CONNECT: it opens no tunnels)."""

    http_status = 501
    close_connection = True


class ServiceUnavailable(GatewayHttpError):
    """The gateway cannot take this request now; try again after ``retry_after`` seconds."""

    http_status = 503

    def __init__(self, message: str = "", retry_after: int = 1) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class InvalidPayload(GatewayHttpError):
    """The request body is not what the route accepts (e.g. not JSON); the body was read
    whole, so the connection stays usable."""

    http_status = 400


class ClientDisconnected(GatewayHttpError):
    """The client closed the connection before the response was complete."""

    http_status = 499
    close_connection = True


class UnsupportedMediaType(GatewayHttpError):
    """The request body's Content-Type is not one the route accepts."""

    http_status = 415


class IdempotencyKeyReused(GatewayHttpError):
    """The Idempotency-Key was first used with a different request body."""

    http_status = 422


class OutcomeUnknown(ServiceUnavailable):
    """The upstream did not confirm in time whether it acted on the request (it may have):
    a retry may repeat the action, unless the request is idempotent (an Idempotency-Key)."""

    http_status = 504


class TempFileError(SurgeError):
    """A body could not be kept in a temporary file (no room left, no such directory); the
    message names the directory. The request fails with 500 and the log says why."""
