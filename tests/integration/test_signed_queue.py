"""``surge up`` with queue access keys: the gateway, the workers and the supervisor all
sign (the secret from the environment), and the queue refuses whoever does not."""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from integration.examples_flow import python_example_config, submit, wait_succeeded
from integration.surge_up import SurgeUp


def test_every_part_signs_and_strangers_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SURGE_TEST_QUEUE_SECRET", "a-secret-shared-by-all-children")
    config = python_example_config(tmp_path)
    text = config.read_text().replace(
        '[queue_backend]\n', '[queue_backend]\naccess_keys = [{ id = "AKIDSURGE", '
        'secret_env = "SURGE_TEST_QUEUE_SECRET" }]\n', 1)
    config.write_text(text)
    up = SurgeUp(tmp_path, config).start()
    try:
        up.wait_until_up(timeout=90)
        location = submit(up, {"width": 16, "height": 16, "seed": 3})
        assert wait_succeeded(up, location, timeout=60)["status"] == "succeeded"
        stranger = boto3.client(
            "sqs", endpoint_url=f"http://127.0.0.1:{up.queue_port}", region_name="us-east-1",
            aws_access_key_id="AKIDSURGE", aws_secret_access_key="a-guess",
            config=Config(retries={"max_attempts": 1}))
        with pytest.raises(ClientError) as excinfo:
            stranger.list_queues()
        assert excinfo.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
        assert up.terminate(timeout=60) == 0
    finally:
        up.close()
