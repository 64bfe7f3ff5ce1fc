"""Smoke test with the AWS CLI (the JSON protocol through a second real client)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from qs_support import ServerThread

AWS = Path(sys.executable).parent / "aws"


def aws(server: ServerThread, *args: str) -> Any:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIDCLI", "AWS_SECRET_ACCESS_KEY": "secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    completed = subprocess.run(
        [str(AWS), "--endpoint-url", server.endpoint, "--output", "json", "sqs", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout) if completed.stdout.strip() else None


def test_aws_cli_smoke(server: ServerThread) -> None:
    assert AWS.exists(), "the AWS CLI must be installed in the virtualenv"
    url = aws(server, "create-queue", "--queue-name", "cli")["QueueUrl"]
    aws(server, "send-message", "--queue-url", url, "--message-body", "hello from the cli")
    received = aws(server, "receive-message", "--queue-url", url, "--attribute-names", "All")
    [message] = received["Messages"]
    assert message["Body"] == "hello from the cli"
    aws(server, "delete-message", "--queue-url", url, "--receipt-handle",
        message["ReceiptHandle"])
    attributes = aws(server, "get-queue-attributes", "--queue-url", url,
                     "--attribute-names", "ApproximateNumberOfMessages")
    assert attributes["Attributes"] == {"ApproximateNumberOfMessages": "0"}
    assert url in aws(server, "list-queues")["QueueUrls"]
