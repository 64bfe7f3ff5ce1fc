"""AWS Signature Version 4 for SQS, pure: the queue server verifies with it, surge's own http
queue backend signs with it.

One implementation on purpose. The server must compute signatures to verify them (botocore
has no verifier), so the canonical request, the string to sign and the key derivation exist
here anyway; the internal client reuses exactly that code instead of depending on botocore
(an optional extra) for the embedded setup. botocore's ``SigV4Auth`` / ``SigV4QueryAuth``
are the reference this module is tested against, byte for byte.

Checks, in the order AWS makes them, with AWS's codes and texts (SQS "Common Errors"):
both or neither kind of signature, missing parts (``IncompleteSignature``, 400; none at all:
``MissingAuthenticationToken``, 403), the date's format, clock skew of more than 15 minutes
or a presigned URL past ``X-Amz-Expires`` (``SignatureDoesNotMatch`` 403 /
``RequestExpired`` 400), ``host`` (and ``x-amz-target``, which names the action) among the
signed headers, the algorithm, the credential scope (date, ``sqs``, ``aws4_request``), the
access key id (``InvalidClientTokenId``, 403), the payload hash, then the signature itself,
compared in constant time.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import NamedTuple
from urllib.parse import quote, quote_from_bytes, unquote_to_bytes

from surge.errors import QueueError

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "sqs"
TERMINATOR = "aws4_request"
MAX_SKEW_SECONDS = 15 * 60
MAX_EXPIRES_SECONDS = 7 * 24 * 3600  # SigV4's limit for a presigned URL
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

_ISO_BASIC = re.compile(r"\d{8}T\d{6}Z")
_REGION = re.compile(r"[a-z0-9-]{1,64}")
_QUERY_AUTH_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature",
                      "X-Amz-SignedHeaders", "X-Amz-Date")
_KEY_CACHE_SIZE = 256


def _error(code: str, message: str) -> QueueError:
    return QueueError(code, message)


# -- canonical forms ----------------------------------------------------------------------------

def canonical_uri(path: str) -> str:
    """The path with dot segments and empty segments removed, then percent-encoded again
    (SigV4 encodes a non-S3 path twice: the path as sent is already encoded once)."""
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    if not segments:
        return "/"
    normalized = "/" + "/".join(segments) + ("/" if path.endswith("/") else "")
    return quote(normalized, safe="/~")


def canonical_query(query: str, *, without: str | None = None) -> str:
    """Each parameter decoded, then encoded as SigV4 wants (unreserved characters only,
    space as %20), sorted by name then value; ``without`` (X-Amz-Signature) left out."""
    pairs: list[tuple[str, str]] = []
    for piece in query.split("&"):
        if not piece:
            continue
        raw_name, _, raw_value = piece.partition("=")
        name = _reencode(raw_name)
        if without is not None and name == without:
            continue
        pairs.append((name, _reencode(raw_value)))
    pairs.sort()
    return "&".join(f"{name}={value}" for name, value in pairs)


def _reencode(component: str) -> str:
    # Form encoding writes a space as '+': decoded as a space, as the query protocol does.
    raw = unquote_to_bytes(component.replace("+", " "))
    return quote_from_bytes(raw, safe="-_.~")


def _trimmed(value: str) -> str:
    return " ".join(value.split())


def canonical_request(method: str, path: str, query: str,
                      headers: Mapping[str, list[str]], signed: list[str], payload_hash: str,
                      *, without: str | None = None) -> str:
    """SigV4's canonical request; ``headers`` maps lower-case names to every value sent."""
    lines = [f"{name}:{','.join(_trimmed(v) for v in headers.get(name, ()))}"
             for name in signed]
    return "\n".join((method.upper(), canonical_uri(path), canonical_query(query, without=without),
                      "\n".join(lines) + "\n", ";".join(signed), payload_hash))


def string_to_sign(timestamp: str, scope: str, request: str) -> str:
    digest = hashlib.sha256(request.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{digest}"


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    key = _hmac(f"AWS4{secret}".encode(), date)
    return _hmac(_hmac(_hmac(key, region), service), TERMINATOR)


def signature(key: bytes, to_sign: str) -> str:
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def iso_basic(epoch_seconds: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch_seconds))


def _headers_by_name(header_list: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in header_list:
        headers.setdefault(name.lower(), []).append(value)
    return headers


# -- signing (surge's own http queue backend) ---------------------------------------------------

@dataclass(frozen=True, slots=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    region: str


class Signer:
    """Signs requests with one key, as botocore's ``SigV4Auth`` does: every header given is
    signed (host included), the payload is hashed, the date goes in ``X-Amz-Date``. The
    derived key is kept for the day it belongs to."""

    def __init__(self, credentials: Credentials,
                 clock: Callable[[], float] = time.time) -> None:
        self.credentials = credentials
        self._clock = clock
        self._key_date = ""
        self._key = b""

    def sign(self, method: str, path: str, query: str, headers: list[tuple[str, str]],
             body: bytes) -> list[tuple[str, str]]:
        """``headers`` (with Host) plus ``X-Amz-Date`` and ``Authorization``."""
        timestamp = iso_basic(self._clock())
        date = timestamp[:8]
        credentials = self.credentials
        if date != self._key_date:
            self._key = signing_key(credentials.secret_access_key, date, credentials.region)
            self._key_date = date
        signed_list = [*headers, ("X-Amz-Date", timestamp)]
        by_name = _headers_by_name(signed_list)
        signed = sorted(by_name)
        scope = f"{date}/{credentials.region}/{SERVICE}/{TERMINATOR}"
        request = canonical_request(method, path, query, by_name, signed,
                                    hashlib.sha256(body).hexdigest())
        proof = signature(self._key, string_to_sign(timestamp, scope, request))
        authorization = (f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
                         f"SignedHeaders={';'.join(signed)}, Signature={proof}")
        return [*signed_list, ("Authorization", authorization)]


# -- verifying (the queue server) ---------------------------------------------------------------

class _Presented(NamedTuple):
    """What a request says about its own signature, from its header or its query string."""

    algorithm: str
    credential: str
    signed_headers: str
    signature: str
    timestamp: str
    expires: int | None
    payload_hash: str | None  # declared by X-Amz-Content-Sha256
    security_token: str | None
    in_query: bool


class Verifier:
    """Checks SigV4 signatures against a table of access key id → secret access key."""

    def __init__(self, secrets: Mapping[str, str],
                 clock: Callable[[], float] = time.time) -> None:
        self._secrets = dict(secrets)
        self._clock = clock
        self._keys: dict[tuple[str, str, str], bytes] = {}

    def verify(self, method: str, path: str, query: str,
               header_list: Iterable[tuple[str, str]], body: bytes) -> str:
        """The access key id that signed this request, or raise ``QueueError``."""
        headers = _headers_by_name(header_list)
        query_params = _query_auth_params(query)
        presented = self._presented(headers, query_params)
        self._check_date(presented, self._clock())
        signed = presented.signed_headers.lower().split(";")
        if "host" not in signed:
            raise _error("SignatureDoesNotMatch",
                         "'Host' or ':authority' must be a 'SignedHeader' in the AWS "
                         "Authorization.")
        if "x-amz-target" in headers and "x-amz-target" not in signed:
            # It names the action: unsigned, a captured ReceiveMessage could become a
            # PurgeQueue of the same queue.
            raise _error("SignatureDoesNotMatch",
                         "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization.")
        if presented.algorithm != ALGORITHM:
            raise _error("IncompleteSignature",
                         f"Unsupported AWS 'algorithm': '{presented.algorithm}' (only "
                         f"{ALGORITHM} for now). ")
        key_id, date, region, service, terminator = self._scope(presented.credential)
        problems = []
        if not _REGION.fullmatch(region):
            problems.append(f"Credential should be scoped to a valid region, not '{region}'.")
        if service != SERVICE:
            problems.append(f"Credential should be scoped to correct service: '{SERVICE}'.")
        if terminator != TERMINATOR:
            problems.append("Credential should be scoped with a valid terminator: "
                            f"'{TERMINATOR}', not '{terminator}'.")
        if date != presented.timestamp[:8]:
            problems.append("Date in Credential scope does not match YYYYMMDD from ISO-8601 "
                            f"version of date from HTTP: '{date}' != "
                            f"'{presented.timestamp[:8]}', from '{presented.timestamp}'.")
        if problems:
            raise _error("SignatureDoesNotMatch", " ".join(problems))
        secret = self._secrets.get(key_id)
        if secret is None or presented.security_token is not None:
            # surge issues no session tokens: one presented cannot be valid.
            raise _error("InvalidClientTokenId",
                         "The security token included in the request is invalid.")
        payload_hash = self._payload_hash(presented, body)
        request = canonical_request(method, path, query, _utf8_view(headers), signed,
                                    payload_hash,
                                    without="X-Amz-Signature" if presented.in_query else None)
        to_sign = string_to_sign(presented.timestamp, f"{date}/{region}/{service}/{terminator}",
                                 request)
        expected = signature(self._signing_key(key_id, secret, date, region), to_sign)
        if not hmac.compare_digest(expected.encode(), presented.signature.encode()):
            shown = request.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            raise _error(
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you "
                "provided. Check your AWS Secret Access Key and signing method. Consult the "
                "service documentation for details.\n\nThe Canonical String for this request "
                f"should have been\n'{shown}'\n\nThe String-to-Sign should have been\n"
                f"'{to_sign}'\n")
        return key_id

    # -- the parts, in AWS's order ----------------------------------------------------------

    @staticmethod
    def _presented(headers: dict[str, list[str]],
                   query_params: dict[str, str] | None) -> _Presented:
        authorization = headers.get("authorization", [""])[-1].strip()
        if authorization and query_params is not None:
            raise _error("IncompleteSignature",
                         "Found both 'X-Amz-Algorithm' as a query-string param and "
                         "'Authorization' as HTTP header.")
        if query_params is not None:
            return _presented_in_query(query_params, headers)
        if not authorization.startswith("AWS4-"):
            raise _error("MissingAuthenticationToken", "Request is missing Authentication Token")
        algorithm, _, rest = authorization.partition(" ")
        parts: dict[str, str] = {}
        for item in rest.split(","):
            name, equals, value = item.strip().partition("=")
            if equals:
                parts[name] = value.strip()
        message = "".join(f"Authorization header requires '{name}' parameter. "
                          for name in ("Credential", "Signature", "SignedHeaders")
                          if not parts.get(name))
        amz_date = headers.get("x-amz-date", [""])[-1].strip()
        http_date = headers.get("date", [""])[-1].strip()
        if not amz_date and not http_date:
            message += ("Authorization header requires existence of either a 'X-Amz-Date' "
                        "or a 'Date' header. ")
        if message:
            raise _error("IncompleteSignature", f"{message}Authorization={authorization}")
        timestamp = amz_date or _iso_from_http_date(http_date)
        declared = headers.get("x-amz-content-sha256", [None])[-1]
        token = headers.get("x-amz-security-token", [None])[-1]
        return _Presented(algorithm, parts["Credential"], parts["SignedHeaders"],
                          parts["Signature"], timestamp, None, declared, token, False)

    @staticmethod
    def _check_date(presented: _Presented, now: float) -> None:
        timestamp = presented.timestamp
        if not _ISO_BASIC.fullmatch(timestamp):
            raise _error("IncompleteSignature",
                         f"Date must be in ISO-8601 'basic format'. Got '{timestamp}'. See "
                         "http://en.wikipedia.org/wiki/ISO_8601")
        try:
            signed_at = datetime.datetime(
                int(timestamp[0:4]), int(timestamp[4:6]), int(timestamp[6:8]),
                int(timestamp[9:11]), int(timestamp[11:13]), int(timestamp[13:15]),
                tzinfo=datetime.UTC).timestamp()
        except ValueError:
            raise _error("IncompleteSignature",
                         f"Date must be in ISO-8601 'basic format'. Got '{timestamp}'. See "
                         "http://en.wikipedia.org/wiki/ISO_8601") from None
        if signed_at > now + MAX_SKEW_SECONDS:
            raise _error("SignatureDoesNotMatch",
                         f"Signature not yet current: {timestamp} is still later than "
                         f"{iso_basic(now + MAX_SKEW_SECONDS)} ({iso_basic(now)} + 15 min.)")
        if presented.expires is not None:
            if signed_at + presented.expires < now:
                raise _error("RequestExpired",
                             f"Request has expired: it was signed at {timestamp} to be valid "
                             f"for {presented.expires} seconds, and it is now {iso_basic(now)}.")
        elif signed_at < now - MAX_SKEW_SECONDS:
            raise _error("SignatureDoesNotMatch",
                         f"Signature expired: {timestamp} is now earlier than "
                         f"{iso_basic(now - MAX_SKEW_SECONDS)} ({iso_basic(now)} - 15 min.)")

    @staticmethod
    def _scope(credential: str) -> tuple[str, str, str, str, str]:
        parts = credential.rstrip("/").split("/")
        if len(parts) != 5:
            raise _error("IncompleteSignature",
                         "Credential must have exactly 5 slash-delimited elements, e.g. "
                         f"keyid/date/region/service/term, got '{credential}'")
        key_id, date, region, service, terminator = parts
        return key_id, date, region, service, terminator

    @staticmethod
    def _payload_hash(presented: _Presented, body: bytes) -> str:
        declared = presented.payload_hash
        if declared is None:
            return hashlib.sha256(body).hexdigest()
        if declared == UNSIGNED_PAYLOAD and not body:
            return declared
        if declared == UNSIGNED_PAYLOAD or not hmac.compare_digest(
                declared.lower().encode(), hashlib.sha256(body).hexdigest().encode()):
            # An unsigned or mismatched payload would let anyone who saw one signed request
            # send another body with it.
            raise _error("SignatureDoesNotMatch",
                         "The provided 'x-amz-content-sha256' header does not match what was "
                         "computed.")
        return declared

    def _signing_key(self, key_id: str, secret: str, date: str, region: str) -> bytes:
        cache_key = (key_id, date, region)
        key = self._keys.get(cache_key)
        if key is None:
            if len(self._keys) >= _KEY_CACHE_SIZE:
                self._keys.clear()  # a new day, or many regions: derive again
            key = self._keys[cache_key] = signing_key(secret, date, region)
        return key


def _query_auth_params(query: str) -> dict[str, str] | None:
    """The X-Amz-* parameters of a presigned URL, or None when it is not one."""
    if "X-Amz-" not in query:
        return None
    params: dict[str, str] = {}
    for piece in query.split("&"):
        name, _, value = piece.partition("=")
        if name.startswith("X-Amz-"):
            params[name] = unquote_to_bytes(value.replace("+", " ")).decode("utf-8", "replace")
    return params if "X-Amz-Algorithm" in params else None


def _presented_in_query(params: dict[str, str], headers: dict[str, list[str]]) -> _Presented:
    missing = "".join(f"AWS query-string parameters must include '{name}'. "
                      for name in _QUERY_AUTH_PARAMS if not params.get(name))
    if missing:
        raise _error("IncompleteSignature", f"{missing}Re-examine the query-string parameters.")
    expires: int | None = None
    if "X-Amz-Expires" in params:
        text = params["X-Amz-Expires"]
        if not text.isdigit() or not 0 < int(text) <= MAX_EXPIRES_SECONDS:
            raise _error("IncompleteSignature",
                         f"X-Amz-Expires must be a number of seconds from 1 to "
                         f"{MAX_EXPIRES_SECONDS} (a week), got '{text}'.")
        expires = int(text)
    declared = params.get("X-Amz-Content-Sha256")
    if declared is None:
        declared = headers.get("x-amz-content-sha256", [None])[-1]
    token = params.get("X-Amz-Security-Token") or headers.get("x-amz-security-token", [None])[-1]
    return _Presented(params["X-Amz-Algorithm"], params["X-Amz-Credential"],
                      params["X-Amz-SignedHeaders"], params["X-Amz-Signature"],
                      params["X-Amz-Date"], expires, declared, token, True)


def _iso_from_http_date(value: str) -> str:
    """A ``Date`` header (RFC 7231) as SigV4's timestamp; unparseable dates are returned as
    they are, for the format check to refuse."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return value
    if parsed.tzinfo is None:  # "-0000": UTC, said without commitment (RFC 5322)
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return iso_basic(parsed.timestamp())


def _utf8_view(headers: dict[str, list[str]]) -> dict[str, list[str]]:
    """Header values as the client hashed them: the server decodes bytes as latin-1,
    clients encode text as UTF-8 (so a non-ASCII value is turned back into its bytes)."""
    if all(value.isascii() for values in headers.values() for value in values):
        return headers
    return {name: [value.encode("latin-1").decode("utf-8", "surrogateescape")
                   for value in values] for name, values in headers.items()}
