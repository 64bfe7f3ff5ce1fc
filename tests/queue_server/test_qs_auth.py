"""Signed requests against a real server with access keys: boto3, the AWS CLI, botocore's
signer over raw HTTP (both protocols, header and query-string signing), Amazon::SQS::Simple."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.auth
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from qs_support import ServerThread, make_client

KEY_ID, SECRET = "AKIDGOOD", "the-right-secret"
NS = {"sqs": "http://queue.amazonaws.com/doc/2012-11-05/"}
AWS = Path(sys.executable).parent / "aws"


@pytest.fixture
def signed(tmp_path: Path) -> Iterator[ServerThread]:
    server = ServerThread(tmp_path, access_keys=[{"id": KEY_ID, "secret": SECRET}]).start()
    yield server
    server.stop()


def error_of(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def send(request: AWSRequest) -> tuple[int, bytes]:
    """``request`` over plain HTTP, exactly as signed."""
    body = request.body or None
    raw = urllib.request.Request(request.url, data=body, method=request.method,
                                 headers=dict(request.headers.items()))
    try:
        with urllib.request.urlopen(raw, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def signed_at(moment: float, request: AWSRequest, *, secret: str = SECRET,
              presign: int | None = None, monkeypatch: pytest.MonkeyPatch) -> AWSRequest:
    """``request`` signed by botocore as if its clock said ``moment``."""
    frozen = datetime.datetime.fromtimestamp(moment, datetime.UTC).replace(tzinfo=None)
    with monkeypatch.context() as patch:
        patch.setattr(botocore.auth, "get_current_datetime", lambda: frozen)
        credentials = Credentials(KEY_ID, secret)
        if presign is None:
            SigV4Auth(credentials, "sqs", "us-east-1").add_auth(request)
        else:
            SigV4QueryAuth(credentials, "sqs", "us-east-1", expires=presign).add_auth(request)
    return request


def xml_code(body: bytes) -> str | None:
    return ET.fromstring(body).findtext(".//sqs:Error/sqs:Code", None, NS)


# -- boto3 (AWS JSON 1.0) -------------------------------------------------------------------

def test_boto3_with_the_right_secret_and_with_wrong_ones(signed: ServerThread) -> None:
    good = make_client(signed.endpoint, KEY_ID, SECRET)
    url = good.create_queue(QueueName="q")["QueueUrl"]
    good.send_message(QueueUrl=url, MessageBody="signed")
    [message] = good.receive_message(QueueUrl=url, AttributeNames=["SenderId"])["Messages"]
    assert message["Attributes"]["SenderId"] == KEY_ID  # who signed, not who claimed
    good.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    with pytest.raises(ClientError) as excinfo:
        make_client(signed.endpoint, KEY_ID, "a-wrong-secret").send_message(
            QueueUrl=url, MessageBody="forged")
    assert error_of(excinfo) == ("SignatureDoesNotMatch", 403)
    with pytest.raises(ClientError) as excinfo:
        make_client(signed.endpoint, "AKIDBAD", SECRET).purge_queue(QueueUrl=url)
    assert error_of(excinfo) == ("InvalidClientTokenId", 403)
    assert "Messages" not in good.receive_message(QueueUrl=url)


def test_a_made_up_signature_is_refused(signed: ServerThread) -> None:
    """The reproduction of the issue: a known key id with ``Signature=deadbeef`` got 200."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    headers = {
        "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS.ListQueues",
        "X-Amz-Date": stamp,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={KEY_ID}/{stamp[:8]}/us-east-1/sqs/"
                         "aws4_request, SignedHeaders=host;x-amz-date;x-amz-target, "
                         "Signature=deadbeef"}
    status, body = send(AWSRequest("POST", signed.endpoint + "/", headers=headers, data=b"{}"))
    assert status == 403
    assert json.loads(body)["__type"].endswith("#InvalidSignatureException")
    del headers["Authorization"]
    status, body = send(AWSRequest("POST", signed.endpoint + "/", headers=headers, data=b"{}"))
    assert status == 403
    assert json.loads(body)["__type"].endswith("#MissingAuthenticationTokenException")


def test_the_ping_needs_no_signature(signed: ServerThread) -> None:
    with urllib.request.urlopen(signed.endpoint + "/_surge/ping", timeout=5) as response:
        assert json.loads(response.read()) == {"status": "ok", "disk_full": False}


# -- the query protocol, signed by botocore's own signer --------------------------------------

def form(endpoint: str, path: str = "/", **params: str) -> AWSRequest:
    from urllib.parse import urlencode

    return AWSRequest("POST", endpoint + path, data=urlencode(params).encode(), headers={
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})


def test_query_protocol_with_header_signatures(signed: ServerThread,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    status, body = send(signed_at(now, form(signed.endpoint, Action="CreateQueue",
                                            QueueName="qp"), monkeypatch=monkeypatch))
    assert status == 200, body
    status, body = send(signed_at(now, form(signed.endpoint, "/000000000000/qp",
                                            Action="SendMessage", MessageBody="é & ü"),
                                  monkeypatch=monkeypatch))
    assert status == 200, body
    status, body = send(signed_at(now, form(signed.endpoint, Action="CreateQueue",
                                            QueueName="qp"), secret="wrong",
                                  monkeypatch=monkeypatch))
    assert (status, xml_code(body)) == (403, "SignatureDoesNotMatch")


def test_clock_skew_past_fifteen_minutes_is_refused(signed: ServerThread,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    status, body = send(signed_at(now - 14 * 60, form(signed.endpoint, Action="ListQueues"),
                                  monkeypatch=monkeypatch))
    assert status == 200, body
    for skew in (-16 * 60, 16 * 60):
        status, body = send(signed_at(now + skew, form(signed.endpoint, Action="ListQueues"),
                                      monkeypatch=monkeypatch))
        assert (status, xml_code(body)) == (403, "SignatureDoesNotMatch")
        assert b"Signature expired" in body or b"Signature not yet current" in body


def test_presigned_urls(signed: ServerThread, monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    url = signed.endpoint + "/?Action=CreateQueue&QueueName=presigned"
    presigned = signed_at(now, AWSRequest("GET", url), presign=60, monkeypatch=monkeypatch)
    assert "X-Amz-Signature=" in presigned.url
    status, body = send(AWSRequest("GET", presigned.url))
    assert status == 200, body
    assert ET.fromstring(body).findtext(".//sqs:QueueUrl", None, NS).endswith("/presigned")

    expired = signed_at(now - 120, AWSRequest("GET", url), presign=60, monkeypatch=monkeypatch)
    status, body = send(AWSRequest("GET", expired.url))
    assert (status, xml_code(body)) == (400, "RequestExpired")
    tampered = presigned.url.replace("QueueName=presigned", "QueueName=other")
    status, body = send(AWSRequest("GET", tampered))
    assert (status, xml_code(body)) == (403, "SignatureDoesNotMatch")


# -- the AWS CLI ------------------------------------------------------------------------------

def aws(server: ServerThread, secret: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": secret,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_MAX_ATTEMPTS": "1"}
    return subprocess.run(
        [str(AWS), "--endpoint-url", server.endpoint, "--output", "json", "sqs", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False)


def test_aws_cli_with_the_right_and_a_wrong_secret(signed: ServerThread) -> None:
    assert AWS.exists(), "the AWS CLI must be installed in the virtualenv"
    done = aws(signed, SECRET, "create-queue", "--queue-name", "cli")
    assert done.returncode == 0, done.stderr
    url = json.loads(done.stdout)["QueueUrl"]
    refused = aws(signed, "wrong-secret", "send-message", "--queue-url", url,
                  "--message-body", "x")
    assert refused.returncode != 0
    assert "SignatureDoesNotMatch" in refused.stderr


# -- Amazon::SQS::Simple (Perl, the query protocol) -------------------------------------------

PERL_CYCLE = r"""
use strict; use warnings;
use Amazon::SQS::Simple;
my ($secret) = @ARGV;
my $sqs = Amazon::SQS::Simple->new('AKIDGOOD', $secret,
    Endpoint => 'http://sqs.us-east-1.amazonaws.com', Timeout => 10);
my $queue = $sqs->CreateQueue('perl-signed');
print "url ", $queue->Endpoint, "\n";
$queue->SendMessage('{"task": "resize"}');
my $message = $queue->ReceiveMessage(WaitTimeSeconds => 2);
print "got ", $message->MessageBody, "\n";
$queue->DeleteMessage($message);
print "deleted\n";
"""


@pytest.fixture
def perl_endpoint(tmp_path: Path) -> Iterator[ServerThread]:
    """A signed server whose queue URLs say sqs.us-east-1.amazonaws.com, reached through
    it as an HTTP proxy: Amazon::SQS::Simple takes the signing service and region from the
    host name (any other host name signs for 's3', which SigV4 must refuse)."""
    server = ServerThread(tmp_path, access_keys=[{"id": KEY_ID, "secret": SECRET}],
                          public_url="http://sqs.us-east-1.amazonaws.com").start()
    yield server
    server.stop()


def run_perl(server: ServerThread, secret: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("perl") is None or subprocess.run(
            ["perl", "-MAmazon::SQS::Simple", "-e", "1"], capture_output=True).returncode:
        raise RuntimeError("Amazon::SQS::Simple is not installed "
                           "(apt-get install libamazon-sqs-simple-perl)")
    script = tmp_path / "cycle.pl"
    script.write_text(PERL_CYCLE)
    env = {**os.environ, "http_proxy": server.endpoint, "no_proxy": "", "NO_PROXY": ""}
    return subprocess.run(["perl", str(script), secret], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_amazon_sqs_simple_signs_and_is_checked(perl_endpoint: ServerThread,
                                                tmp_path: Path) -> None:
    done = run_perl(perl_endpoint, SECRET, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "url http://sqs.us-east-1.amazonaws.com/000000000000/perl-signed",
        'got {"task": "resize"}', "deleted"]
    refused = run_perl(perl_endpoint, "a-wrong-secret", tmp_path)
    assert refused.returncode != 0
    assert "403 Forbidden" in refused.stderr
    assert "<Code>SignatureDoesNotMatch</Code>" in refused.stderr


def test_queue_urls_come_from_configuration_not_the_host_header(tmp_path: Path) -> None:
    server = ServerThread(tmp_path).start()
    try:
        for host in ("evil.example:666", "127.0.0.1"):  # a lie, and no port at all
            request = AWSRequest("POST", server.endpoint + "/", data=b"Action=CreateQueue"
                                 b"&QueueName=q", headers={
                                     "Host": host, "Content-Type":
                                     "application/x-www-form-urlencoded"})
            status, body = send(request)
            assert status == 200, body
            url = ET.fromstring(body).findtext(".//sqs:QueueUrl", None, NS)
            assert url == f"{server.endpoint}/000000000000/q"
    finally:
        server.stop()


def test_a_configured_public_url_names_the_queues(tmp_path: Path) -> None:
    server = ServerThread(tmp_path, public_url="https://queues.example.com").start()
    try:
        sqs = make_client(server.endpoint)
        url = sqs.create_queue(QueueName="pub")["QueueUrl"]
        assert url == "https://queues.example.com/000000000000/pub"
        assert sqs.list_queues()["QueueUrls"] == [url]
        assert sqs.get_queue_url(QueueName="pub")["QueueUrl"] == url
    finally:
        server.stop()


def test_unsigned_local_use_without_keys(tmp_path: Path) -> None:
    """No keys configured: anything is accepted (documented), as before."""
    server = ServerThread(tmp_path).start()
    try:
        client: Any = make_client(server.endpoint, "ANYONE", "any-secret")
        url = client.create_queue(QueueName="open")["QueueUrl"]
        client.send_message(QueueUrl=url, MessageBody="m")
    finally:
        server.stop()
