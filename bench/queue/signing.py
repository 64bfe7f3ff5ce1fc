"""What verifying SigV4 costs the queue server, side by side with an unsigned server.

    .venv/bin/python bench/queue/signing.py          # ~1 minute, prints two tables

1. Per call, without sockets: the server's ``Verifier.verify`` and the http backend's
   ``Signer.sign`` on a SendMessageBatch of 10 × 113-byte messages, next to botocore's
   ``SigV4Auth.add_auth`` (what every boto3 call pays to sign), and a receipt handle made
   and checked (HMAC) next to the old f-string.
2. End to end, in the same run: two `surge queue serve`, one without access keys and one
   with; surge's async client (signing with surge.queue.sigv4 for the second) and boto3
   (which signs for both: only the server's check differs) against each.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from run import (
    BENCH_KEY_ID,
    BENCH_SECRET,
    Figures,
    run_boto3,
    run_surge_client,
    start_surge,
)

from surge.queue.server.receipts import ReceiptHandles
from surge.queue.sigv4 import Credentials, Signer, Verifier


def microseconds(function: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(function, number=number, repeat=5)) / number * 1e6


def per_call() -> list[tuple[str, float]]:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    body = orjson.dumps({"QueueUrl": "http://127.0.0.1:9324/000000000000/q", "Entries": [
        {"Id": str(i), "MessageBody": "message body " + "x" * 100} for i in range(10)]})
    headers = [("Host", "127.0.0.1:9324"), ("Content-Type", "application/x-amz-json-1.0"),
               ("X-Amz-Target", "AmazonSQS.SendMessageBatch")]
    signer = Signer(Credentials(BENCH_KEY_ID, BENCH_SECRET, "us-east-1"))
    signed = [(name.lower(), value) for name, value in signer.sign("POST", "/", "", headers,
                                                                   body)]
    verifier = Verifier({BENCH_KEY_ID: BENCH_SECRET})
    assert verifier.verify("POST", "/", "", signed, body) == BENCH_KEY_ID
    botocore_signer = SigV4Auth(BotoCredentials(BENCH_KEY_ID, BENCH_SECRET), "sqs",
                                "us-east-1")

    def botocore_sign() -> None:
        request = AWSRequest("POST", "http://127.0.0.1:9324/", data=body,
                             headers=dict(headers[1:]))
        botocore_signer.add_auth(request)

    handles = ReceiptHandles.ephemeral()
    handle = handles.encode("q", 123456, 3, "0f8fad5b-d9cb-469f-a165-70867728950e")
    return [
        ("server: Verifier.verify", microseconds(
            lambda: verifier.verify("POST", "/", "", signed, body), 2000)),
        ("client: Signer.sign (surge)", microseconds(
            lambda: signer.sign("POST", "/", "", headers, body), 2000)),
        ("client: SigV4Auth.add_auth (botocore)", microseconds(botocore_sign, 2000)),
        ("sha256 of the 1.5 KB body alone", microseconds(
            lambda: hashlib.sha256(body).hexdigest(), 20000)),
        ("receipt handle: encode + decode (HMAC)", microseconds(
            lambda: handles.decode("q", handles.encode(
                "q", 123456, 3, "0f8fad5b-d9cb-469f-a165-70867728950e")), 20000)),
        ("receipt handle: old f-string + split", microseconds(
            lambda: f"{123456}-{3}-0f8fad5b-d9cb-469f-a165-70867728950e".split("-", 2),
            20000)),
        ("(handle length)", float(len(handle))),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000, help="surge client, per column")
    parser.add_argument("--boto3-messages", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    print(f"\n{'per call (best of 5)':<42} {'µs':>8}")
    for name, value in per_call():
        print(f"{name:<42} {value:>8.1f}")

    work = tempfile.mkdtemp(prefix="surge-bench-signing-")
    config = os.path.join(work, "signed.toml")
    with open(config, "w") as file:
        file.write(f'[queue_backend]\naccess_keys = [{{ id = "{BENCH_KEY_ID}", '
                   f'secret = "{BENCH_SECRET}" }}]\n')
    unsigned, unsigned_endpoint = start_surge(os.path.join(work, "unsigned"))
    signed, signed_endpoint = start_surge(os.path.join(work, "signed"), config)
    rows: dict[str, Figures | str] = {}
    try:
        # Alternate, so load from other work on the machine falls on both alike.
        for round_number in (1, 2):
            for label, endpoint, keyed in (("no keys", unsigned_endpoint, False),
                                           ("keys, verified", signed_endpoint, True)):
                rows[f"surge client, {label} #{round_number}"] = run_surge_client(
                    endpoint, f"c{round_number}", args.messages, args.concurrency,
                    signed=keyed)
                rows[f"boto3, {label} #{round_number}"] = run_boto3(
                    endpoint, f"b{round_number}", args.boto3_messages, 1, 8)
    finally:
        for process in (unsigned, signed):
            process.terminate()
            process.wait(15)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'end to end (one run)':<34} {'messages':>9} {'sent/s':>10} {'recv+del/s':>11}")
    for name, figures in rows.items():
        if isinstance(figures, str):
            print(f"{name:<34} {figures}")
        else:
            print(f"{name:<34} {figures.messages:>9} {figures.sent_per_second:>10.0f} "
                  f"{figures.received_per_second:>11.0f}")
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
