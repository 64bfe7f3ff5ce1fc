"""Header rewriting between client and target (pure).

Hop-by-hop headers describe one connection, so they are dropped in both directions: the
fixed list of RFC 9110 §7.6.1 plus every header the ``Connection`` header names. The
request gains the forwarding headers an ALB adds; Host is kept as the client sent it.
"""

from __future__ import annotations

from collections.abc import Iterable

from surge.gateway.exchange import Headers

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade",
    b"proxy-connection", b"proxy-authenticate", b"proxy-authorization",
})
# Replaced by our own values (forwarding headers) or by the body framing we choose.
_REPLACED_ON_REQUEST = frozenset({
    b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-port", b"x-real-ip",
    b"content-length", b"expect",
})


def connection_named(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names listed in ``Connection`` (``Connection: close, X-Foo`` → {close, x-foo})."""
    named: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            named.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return frozenset(named)


def _is_hop_by_hop(name: bytes, named: frozenset[bytes]) -> bool:
    return name in HOP_BY_HOP or name.startswith(b"proxy-") or name in named


def request_headers(
    headers: Headers,
    *,
    client_host: str,
    scheme: str,
    server_port: int,
    body_length: int | None,
) -> Headers:
    """The headers sent to the target. ``body_length`` None means a chunked body."""
    named = connection_named(headers)
    forwarded_for: list[bytes] = []
    out: Headers = []
    announced_length = False
    for name, value in headers:
        if name == b"content-length":
            announced_length = True
        if name == b"x-forwarded-for":
            forwarded_for.append(value.strip())
        elif name in _REPLACED_ON_REQUEST or _is_hop_by_hop(name, named):
            continue
        else:
            out.append((name, value))
    client = client_host.encode("latin-1")
    forwarded_for.append(client)
    out.append((b"x-forwarded-for", b", ".join(v for v in forwarded_for if v)))
    out.append((b"x-forwarded-proto", scheme.encode("latin-1")))
    out.append((b"x-forwarded-port", str(server_port).encode("latin-1")))
    out.append((b"x-real-ip", client))
    if body_length is None:
        out.append((b"transfer-encoding", b"chunked"))
    elif body_length > 0 or announced_length:
        # An empty POST keeps its "Content-Length: 0": some servers answer 411 without it.
        out.append((b"content-length", str(body_length).encode("latin-1")))
    return out


def response_headers(headers: Headers) -> Headers:
    """The target's headers as sent to the client: hop-by-hop ones removed. Content-Length
    stays, so the server sends the body as is; without it the server re-chunks."""
    named = connection_named(headers)
    return [(name, value) for name, value in headers if not _is_hop_by_hop(name, named)]


def request_head(method: str, target: str, headers: Headers) -> bytes:
    """The HTTP/1.1 request line and headers, ready to write."""
    lines = [f"{method} {target} HTTP/1.1\r\n".encode("latin-1")]
    lines.extend(name + b": " + value + b"\r\n" for name, value in headers)
    lines.append(b"\r\n")
    return b"".join(lines)
