"""Fixtures: a real queue server on a free port, and a boto3 client for it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from qs_support import ServerThread, make_client


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    thread = ServerThread(tmp_path).start()
    yield thread
    thread.stop()


@pytest.fixture
def sqs(server: ServerThread) -> Any:
    return make_client(server.endpoint)
