"""``surge up`` that cannot start says so and exits 1, leaving nothing behind."""

from __future__ import annotations

import socket
import time

from integration.examples_flow import python_example_config
from integration.surge_up import SurgeUp

FAST_GIVE_UP = '\n[supervisor]\nrestart_backoff_base = "0.1s"\nmax_fast_crashes = 2\n'


def test_gateway_port_taken_exits_1(tmp_path):
    config = python_example_config(tmp_path)
    config.write_text(config.read_text() + FAST_GIVE_UP)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        up = SurgeUp(tmp_path, config)
        up.gateway_port = squatter.getsockname()[1]
        up.start()
        try:
            assert up.process is not None
            deadline = time.monotonic() + 60
            while up.process.poll() is None and time.monotonic() < deadline:
                up.remember_descendants()
                time.sleep(0.1)
            assert up.process.poll() == 1
            assert up.seen_pids  # the queue server and the app instance had started
            log = up.log_path.read_text()
            assert "no gateway process could start" in log
            assert up.survivors() == []
        finally:
            up.close()
