"""Request framing decisions: pure functions over a parsed request head.

httptools (llhttp) already refuses most malformed input; these checks are surge's own
statement of what its HTTP servers accept (the gateway, and httpkit's server under the queue
server and the admin API), so a lenient parser build or a future change cannot let an
ambiguous request through to a handler or a backend (request smuggling). Every refusal is
a ``BadRequest`` (400, connection closed) or ``BodyTooLarge`` (413).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httptools

from surge.gateway.errors import BadRequest, BodyTooLarge

# RFC 9110 token characters: what a header name may be made of.
_TOKEN_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DIGITS_RE = re.compile(rb"[0-9]{1,18}")


@dataclass(frozen=True, slots=True)
class Framing:
    """How the request body is delimited, and what the client asked of the exchange."""

    content_length: int | None  # None: no length given (chunked, or no body)
    chunked: bool
    expect_continue: bool

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


# The framing of most requests, shared (a frozen dataclass costs a microsecond to build).
_NO_BODY = Framing(None, False, False)
_EXPECT_BUT_NO_BODY = Framing(None, False, True)


def header_problem(name: bytes, value: bytes) -> BadRequest | None:
    """Why a header line is refused, or None when it is acceptable (one call per header:
    a browser sends a dozen)."""
    if _TOKEN_RE.fullmatch(name) is None:
        return BadRequest(f"invalid header name {name[:40]!r}")
    # obs-fold and bare CR/LF would let one header hide another.
    if b"\r" in value or b"\n" in value:
        return BadRequest("line folding or a bare CR/LF in a header value is not accepted")
    return None


# Header lines llhttp must refuse by itself (see ``parser_refuses_bad_headers``).
_BAD_HEADER_LINES = (b"X y: 1", b"caf\xc3\xa9: 1", b"a\tb: 1", b"X-A: a\r\n b", b"X-A: a\rb",
                     b"X-A: a\nb", b"X-A: a\x00b")


def parser_refuses_bad_headers() -> bool:
    """True when the installed httptools (llhttp) refuses every kind of header line
    ``header_problem`` refuses: then the check per header is the parser's, at C speed
    (about 1 µs per header saved). A lenient build makes the gateway check each header."""
    for line in _BAD_HEADER_LINES:
        parser = httptools.HttpRequestParser(object())  # no callbacks: errors only
        try:
            parser.feed_data(b"GET / HTTP/1.1\r\nHost: x\r\n" + line + b"\r\n\r\n")
        except httptools.HttpParserError:
            continue
        return False
    return True


def decide_framing(http_version: str, headers: list[tuple[bytes, bytes]],
                   max_body_size: int) -> Framing:
    """The body framing of a request whose head was ``headers`` (lower-cased names).

    Refuses: Content-Length together with Transfer-Encoding, more than one Content-Length
    (even equal ones), a Content-Length that is not plain digits, a Transfer-Encoding other
    than exactly ``chunked``, Transfer-Encoding on HTTP/1.0, and HTTP/1.1 without Host.
    """
    content_lengths: list[bytes] = []
    transfer_encodings: list[bytes] = []
    hosts = 0
    expect_continue = False
    for name, value in headers:
        if name == b"content-length":
            content_lengths.append(value.strip())
        elif name == b"transfer-encoding":
            transfer_encodings.append(value.strip().lower())
        elif name == b"host":
            hosts += 1
        elif name == b"expect":
            expect_continue = value.strip().lower() == b"100-continue"
    if content_lengths and transfer_encodings:
        raise BadRequest("Content-Length together with Transfer-Encoding is ambiguous")
    if len(content_lengths) > 1:
        raise BadRequest("more than one Content-Length header")
    if http_version == "1.1" and hosts != 1:
        raise BadRequest("an HTTP/1.1 request needs exactly one Host header")
    if transfer_encodings:
        if http_version != "1.1":
            raise BadRequest("Transfer-Encoding is not allowed in an HTTP/1.0 request")
        if transfer_encodings != [b"chunked"]:
            raise BadRequest("only 'Transfer-Encoding: chunked' is accepted")
        return Framing(None, True, expect_continue)
    if content_lengths:
        if not _DIGITS_RE.fullmatch(content_lengths[0]):
            raise BadRequest(f"invalid Content-Length {content_lengths[0][:40]!r}")
        length = int(content_lengths[0])
        if length > max_body_size:
            raise BodyTooLarge(f"body of {length} bytes is over the limit of {max_body_size}")
        return Framing(length, False, expect_continue)
    return _EXPECT_BUT_NO_BODY if expect_continue else _NO_BODY
