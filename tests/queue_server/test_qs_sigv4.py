"""SigV4 verification and signing without sockets, against botocore's own signer."""

from __future__ import annotations

import datetime
import hashlib
from typing import Any
from urllib.parse import urlsplit

import botocore.auth
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from surge.errors import QueueError
from surge.queue.sigv4 import Credentials, Signer, Verifier, canonical_query

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
KEY_ID, SECRET = "AKIDSURGE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
ENDPOINT = "http://127.0.0.1:9324"
JSON_TARGET = "AmazonSQS.SendMessage"


@pytest.fixture(autouse=True)
def frozen_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore signs at NOW (it reads the clock through get_current_datetime)."""
    moment = datetime.datetime.fromtimestamp(NOW, datetime.UTC).replace(tzinfo=None)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: moment)


def boto_sign(method: str = "POST", url: str = ENDPOINT + "/",
              body: bytes | dict[str, str] = b"{}",
              headers: dict[str, str] | None = None, *, secret: str = SECRET,
              key_id: str = KEY_ID, region: str = "us-east-1", service: str = "sqs",
              presign: int | None = None) -> AWSRequest:
    if headers is None:
        headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": JSON_TARGET}
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    credentials = BotoCredentials(key_id, secret)
    if presign is None:
        SigV4Auth(credentials, service, region).add_auth(request)
    else:
        SigV4QueryAuth(credentials, service, region, expires=presign).add_auth(request)
    return request


def as_received(request: AWSRequest) -> tuple[str, str, str, list[tuple[str, str]], bytes]:
    """What the server sees of ``request``: method, raw path and query, headers (with the
    Host the HTTP client adds), body."""
    parts = urlsplit(request.url)
    headers = [(name.lower(), value.decode() if isinstance(value, bytes) else value)
               for name, value in request.headers.items()]
    if not any(name == "host" for name, _ in headers):
        headers.append(("host", parts.netloc))
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    return request.method, parts.path or "/", parts.query, headers, body


def verifier(clock: float = NOW, **secrets: str) -> Verifier:
    return Verifier(secrets or {KEY_ID: SECRET}, clock=lambda: clock)


def verify(request: AWSRequest, **kwargs: Any) -> str:
    return verifier(**kwargs).verify(*as_received(request))


def refusal(request: AWSRequest | tuple[Any, ...], **kwargs: Any) -> QueueError:
    received = as_received(request) if isinstance(request, AWSRequest) else request
    with pytest.raises(QueueError) as caught:
        verifier(**kwargs).verify(*received)
    return caught.value


# -- accepted ---------------------------------------------------------------------------------

def test_botocore_header_signature_is_accepted() -> None:
    assert verify(boto_sign(body=b'{"QueueUrl": "x", "MessageBody": "hello"}')) == KEY_ID


def test_query_protocol_post_and_a_queue_url_path_are_accepted() -> None:
    body = b"Action=SendMessage&MessageBody=a+b%20c&QueueUrl=http%3A%2F%2Fh%2F0%2Fq"
    request = boto_sign(url=ENDPOINT + "/000000000000/q", body=body, headers={
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    assert verify(request) == KEY_ID


def test_presigned_query_string_is_accepted() -> None:
    request = boto_sign(method="GET", url=ENDPOINT + "/000000000000/q?Action=ReceiveMessage"
                        "&MaxNumberOfMessages=1", body=b"", headers={}, presign=300)
    assert "X-Amz-Signature=" in request.url
    assert verify(request) == KEY_ID


def test_presigned_post_with_the_body_moved_into_the_url_is_accepted() -> None:
    # botocore moves a query-protocol body into the URL when it presigns.
    request = boto_sign(url=ENDPOINT + "/", body={"Action": "ListQueues",
                                                  "QueueNamePrefix": "a b/é"},
                        headers={"Content-Type": "application/x-www-form-urlencoded; "
                                 "charset=utf-8"}, presign=60)
    assert verify(request) == KEY_ID


def test_fourteen_minutes_of_skew_are_allowed_either_way() -> None:
    request = boto_sign()
    assert verify(request, clock=NOW + 14 * 60) == KEY_ID
    assert verify(request, clock=NOW - 14 * 60) == KEY_ID


def test_a_date_header_instead_of_x_amz_date() -> None:
    # botocore keeps a Date header when given one, and signs with it.
    request = boto_sign(headers={"Content-Type": "application/x-amz-json-1.0",
                                 "X-Amz-Target": JSON_TARGET, "Date": "whatever"})
    assert "X-Amz-Date" not in request.headers
    assert verify(request) == KEY_ID


paths = st.lists(st.text(alphabet="abcXYZ09-_.~ %/é+", min_size=1, max_size=8), max_size=4)
params = st.lists(st.tuples(st.text(alphabet="aB9-_.~ +/=é&", max_size=6),
                            st.text(alphabet="aB9-_.~ +/=é&%", max_size=10)), max_size=5)


@given(segments=paths, query=params, body=st.binary(max_size=64),
       header_value=st.text(alphabet="ab \tc,;=", max_size=12))
@settings(max_examples=150, deadline=None)
def test_whatever_botocore_signs_verifies(segments: list[str], query: list[tuple[str, str]],
                                          body: bytes, header_value: str) -> None:
    from urllib.parse import quote, urlencode

    path = "/" + "/".join(quote(segment, safe="") for segment in segments)
    url = ENDPOINT + path + ("?" + urlencode(query, quote_via=quote) if query else "")
    request = boto_sign(url=url, body=body, headers={
        "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": JSON_TARGET,
        "X-Custom": header_value})
    assert verify(request) == KEY_ID


def test_our_signer_makes_botocores_signature() -> None:
    body = b'{"QueueUrl": "http://127.0.0.1:9324/000000000000/q", "MessageBody": "m"}'
    headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": JSON_TARGET}
    reference = boto_sign(body=body, headers=dict(headers))
    ours = Signer(Credentials(KEY_ID, SECRET, "us-east-1"), clock=lambda: NOW).sign(
        "POST", "/", "", [("Host", "127.0.0.1:9324"), *headers.items()], body)
    assert dict(ours)["Authorization"] == reference.headers["Authorization"]
    assert dict(ours)["X-Amz-Date"] == reference.headers["X-Amz-Date"]
    received = [(name.lower(), value) for name, value in ours]
    assert verifier().verify("POST", "/", "", received, body) == KEY_ID


# -- refused ----------------------------------------------------------------------------------

def test_wrong_secret_unknown_key_and_tampering() -> None:
    error = refusal(boto_sign(secret="not-the-secret"))
    assert error.code == "SignatureDoesNotMatch"
    assert "The Canonical String for this request should have been" in str(error)
    assert refusal(boto_sign(key_id="AKIDOTHER")).code == "InvalidClientTokenId"

    method, path, query, headers, body = as_received(boto_sign(body=b'{"a": 1}'))
    for tampered in [
        ("PUT", path, query, headers, body),
        (method, "/000000000000/other", query, headers, body),
        (method, path, "Action=PurgeQueue", headers, body),
        (method, path, query, headers, b'{"a": 2}'),
        (method, path, query, [(n, "AmazonSQS.PurgeQueue" if n == "x-amz-target" else v)
                               for n, v in headers], body),
        (method, path, query, [(n, "evil.example" if n == "host" else v)
                               for n, v in headers], body),
    ]:
        assert refusal(tampered).code == "SignatureDoesNotMatch", tampered[:3]


def test_a_made_up_signature_is_refused() -> None:
    method, path, query, headers, body = as_received(boto_sign())
    forged = [(n, v.rsplit("Signature=", 1)[0] + "Signature=deadbeef" if n == "authorization"
               else v) for n, v in headers]
    assert refusal((method, path, query, forged, body)).code == "SignatureDoesNotMatch"


def test_clock_skew_past_fifteen_minutes() -> None:
    request = boto_sign()
    late = refusal(request, clock=NOW + 16 * 60)
    assert late.code == "SignatureDoesNotMatch"
    assert str(late).endswith("Signature expired: 20231114T221320Z is now earlier than "
                              "20231114T221420Z (20231114T222920Z - 15 min.)")
    early = refusal(request, clock=NOW - 16 * 60)
    assert early.code == "SignatureDoesNotMatch"
    assert "Signature not yet current: 20231114T221320Z is still later than" in str(early)


def test_presigned_url_expires() -> None:
    request = boto_sign(method="GET", url=ENDPOINT + "/?Action=ListQueues", body=b"",
                        headers={}, presign=60)
    assert verify(request, clock=NOW + 59) == KEY_ID
    assert refusal(request, clock=NOW + 61).code == "RequestExpired"
    method, path, query, headers, body = as_received(request)
    for bad in ("0", "604801", "soon"):
        changed = query.replace("X-Amz-Expires=60", f"X-Amz-Expires={bad}")
        assert refusal((method, path, changed, headers, body)).code == "IncompleteSignature"


def test_host_and_target_must_be_signed() -> None:
    method, path, query, headers, body = as_received(boto_sign())
    unsigned_host = [(n, v.replace("host;", "")) for n, v in headers]
    error = refusal((method, path, query, unsigned_host, body))
    assert error.code == "SignatureDoesNotMatch"
    assert "'Host' or ':authority' must be a 'SignedHeader'" in str(error)
    unsigned_target = [(n, v.replace(";x-amz-target", "")) for n, v in headers]
    assert "'X-Amz-Target' must be a 'SignedHeader'" in str(
        refusal((method, path, query, unsigned_target, body)))


def test_credential_scope() -> None:
    wrong_service = refusal(boto_sign(service="s3"))
    assert wrong_service.code == "SignatureDoesNotMatch"
    assert "Credential should be scoped to correct service: 'sqs'." in str(wrong_service)
    method, path, query, headers, body = as_received(boto_sign())
    for old, new, message in [
        ("/20231114/", "/20231113/", "Date in Credential scope does not match"),
        ("/aws4_request", "/aws5_request", "with a valid terminator"),
        ("/us-east-1/", "/US_EAST/", "scoped to a valid region"),
    ]:
        changed = [(n, v.replace(old, new)) for n, v in headers]
        error = refusal((method, path, query, changed, body))
        assert error.code == "SignatureDoesNotMatch"
        assert message in str(error)
    four_parts = [(n, v.replace("/aws4_request", "")) for n, v in headers]
    assert refusal((method, path, query, four_parts, body)).code == "IncompleteSignature"


@pytest.mark.parametrize(("authorization", "code", "message"), [
    (None, "MissingAuthenticationToken", "Request is missing Authentication Token"),
    ("AWS AKIDSURGE:c2lnbmF0dXJl", "MissingAuthenticationToken", "missing"),
    ("AWS4-HMAC-SHA256 Credential=AKIDSURGE/20231114/us-east-1/sqs/aws4_request",
     "IncompleteSignature", "Authorization header requires 'Signature' parameter. "
     "Authorization header requires 'SignedHeaders' parameter. Authorization=AWS4-HMAC"),
    ("AWS4-HMAC-SHA512 Credential=AKIDSURGE/20231114/us-east-1/sqs/aws4_request, "
     "SignedHeaders=host, Signature=00", "IncompleteSignature", "Unsupported AWS 'algorithm'"),
])
def test_malformed_or_missing_authorization(authorization: str | None, code: str,
                                           message: str) -> None:
    headers = [("host", "127.0.0.1:9324"), ("x-amz-date", "20231114T221320Z")]
    if authorization is not None:
        headers.append(("authorization", authorization))
    error = refusal(("POST", "/", "", headers, b""))
    assert (error.code, message in str(error)) == (code, True)


def test_missing_date_and_bad_date() -> None:
    method, path, query, headers, body = as_received(boto_sign())
    no_date = [(n, v) for n, v in headers if n != "x-amz-date"]
    error = refusal((method, path, query, no_date, body))
    assert error.code == "IncompleteSignature"
    assert "requires existence of either a 'X-Amz-Date' or a 'Date' header" in str(error)
    bad_date = [(n, "2023-11-14T22:13:20Z" if n == "x-amz-date" else v) for n, v in headers]
    error = refusal((method, path, query, bad_date, body))
    assert (error.code, "ISO-8601 'basic format'" in str(error)) == ("IncompleteSignature", True)


def test_both_kinds_of_signature_and_incomplete_query_signature() -> None:
    presigned = boto_sign(method="GET", url=ENDPOINT + "/?Action=ListQueues", body=b"",
                          headers={}, presign=60)
    method, path, query, headers, body = as_received(presigned)
    both = [*headers, ("authorization", "AWS4-HMAC-SHA256 Credential=x")]
    assert "Found both" in str(refusal((method, path, query, both, body)))
    partial = "&".join(p for p in query.split("&") if not p.startswith("X-Amz-SignedHeaders"))
    error = refusal((method, path, partial, headers, body))
    assert error.code == "IncompleteSignature"
    assert "AWS query-string parameters must include 'X-Amz-SignedHeaders'" in str(error)


def test_declared_payload_hash_must_match_the_body() -> None:
    body = b'{"MessageBody": "one"}'
    request = boto_sign(body=body, headers={
        "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": JSON_TARGET,
        "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()})
    assert verify(request) == KEY_ID
    method, path, query, headers, _ = as_received(request)
    error = refusal((method, path, query, headers, b'{"MessageBody": "two"}'))
    assert error.code == "SignatureDoesNotMatch"
    assert "x-amz-content-sha256" in str(error)
    unsigned = boto_sign(body=body, headers={
        "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": JSON_TARGET,
        "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    assert refusal(unsigned).code == "SignatureDoesNotMatch"


def test_a_session_token_is_refused() -> None:
    request = AWSRequest(method="POST", url=ENDPOINT + "/", data=b"{}",
                         headers={"X-Amz-Target": JSON_TARGET})
    SigV4Auth(BotoCredentials(KEY_ID, SECRET, token="session"), "sqs",
              "us-east-1").add_auth(request)
    assert refusal(request).code == "InvalidClientTokenId"


def test_canonical_query_sorts_and_encodes_as_sigv4_says() -> None:
    assert canonical_query("b=2&a=x+y&a=%7e&c&X-Amz-Signature=s",
                           without="X-Amz-Signature") == "a=x%20y&a=~&b=2&c="
