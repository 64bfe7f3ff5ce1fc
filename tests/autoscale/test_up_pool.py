"""``surge up`` with a CPU policy on a pool: CPU-bound load grows the pool from min within
warmup + evaluation time; light load afterwards shrinks it back, and the client sees no
error while the surplus instance drains and stops."""

from __future__ import annotations

import sys
import threading
import time

from integration.surge_up import RequestLoop, SurgeUp, http, wait_for, write_config

POOL_CONFIG = """
data_dir = "data"
[gateway]
processes = 1
[gateway.access_log]
enabled = {access_log}
[queue_backend]
url = "http://127.0.0.1:1"
[[routes]]
prefix = "/"
proxy = {{ pool = "web" }}
[pools.web]
command = "{python} {app} {{port}}"
workers = 1
instances = {{ min = 1, max = {max_instances}, desired = 1 }}
deregistration_delay = "{drain}"
health_check = {{ path = "/", interval = "1s", healthy_threshold = 1 }}
[pools.web.scaling]
period = "1s"
"""

CPU_SCALING = """
cpu = 50
evaluation_periods = 3
scale_in_evaluation_periods = 4
instance_warmup = "2s"
scale_out_cooldown = "2s"
scale_in_cooldown = "0s"
"""

REQUESTS_SCALING = """
requests_per_target = 300
evaluation_periods = 2
instance_warmup = "1s"
"""


def pool_config(tmp_path, scaling: str, *, access_log: bool, max_instances: int, drain: str):
    app = tmp_path / "app.py"
    app.write_text(APP)
    text = POOL_CONFIG.format(python=sys.executable, app=app, max_instances=max_instances,
                              drain=drain, access_log=str(access_log).lower()) + scaling
    return write_config(tmp_path / "surge.toml", text)


APP = '''
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/work":
            deadline = time.process_time() + 0.02  # 20 ms of CPU per request
            while time.process_time() < deadline:
                pass
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
'''


def test_cpu_load_grows_the_pool_and_light_load_shrinks_it_without_errors(tmp_path):
    config = pool_config(tmp_path, CPU_SCALING, access_log=False, max_instances=2, drain="2s")
    up = SurgeUp(tmp_path, config).start()
    try:
        up.wait_until_up(timeout=30)
        assert pool(up)["desired"] == 1
        with RequestLoop(up.gateway_port, "/work", clients=3) as load:
            wait_for("scale-out to 2 instances", lambda: pool(up)["desired"] == 2, 25)
            out = up.state()["scaling_activity"][0]
            assert (out["direction"], out["policy"], out["from_desired"], out["to_desired"]) \
                == ("out", "cpu", 1, 2)
            assert out["value"] > 50
            wait_for("2 active targets", lambda: len(active(up)) == 2, 15)
            up.remember_descendants()
            load.pause = 0.3  # light load: well under half a core over two instances
            wait_for("scale-in to 1 instance", lambda: pool(up)["desired"] == 1, 25)
            wait_for("the surplus instance drained and stopped",
                     lambda: len(pool(up)["targets"]) == 1 and len(instances(up)) == 1, 15)
            time.sleep(1)  # traffic keeps flowing to the one left
        assert load.errors == [] and set(load.statuses) == {200}
        assert load.answered > 0
        last = up.state()["scaling_activity"][0]
        assert (last["direction"], last["policy"], last["to_desired"]) == ("in", "cpu", 1)
        assert last["value"] < 45
        assert up.terminate(timeout=60) == 0
        assert up.survivors() == []
    finally:
        up.close()


def pool(up: SurgeUp) -> dict:
    return up.state()["pools"]["web"]


def active(up: SurgeUp) -> list[str]:
    return [t["address"] for t in pool(up)["targets"] if t["state"] == "active"]


def instances(up: SurgeUp) -> list[str]:
    return [p["name"] for p in up.state()["processes"] if p["kind"] == "pool"]


def test_requests_per_target_from_the_access_log_grows_the_pool(tmp_path):
    config = pool_config(tmp_path, REQUESTS_SCALING, access_log=True, max_instances=3, drain="1s")
    up = SurgeUp(tmp_path, config).start()
    try:
        up.wait_until_up(timeout=30)
        with RequestLoop(up.gateway_port, "/work", clients=3) as load:
            load.pause = 0.05  # ~40 requests a second: far over 300 a minute (5 a second)
            wait_for("scale-out to 3 instances", lambda: pool(up)["desired"] == 3, 20)
        assert load.errors == [] and set(load.statuses) == {200}
        out = up.state()["scaling_activity"][-1]
        assert (out["policy"], out["from_desired"], out["to_desired"]) == \
            ("requests_per_target", 1, 3)
        assert out["value"] > 300
        assert up.terminate(timeout=60) == 0
    finally:
        up.close()


class GaugeServer:
    """A Prometheus text endpoint whose one gauge the test sets (a custom metric)."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = (f"# TYPE sessions gauge\nsessions{{shard=\"a\"}} {server.value / 2}\n"
                        f"sessions{{shard=\"b\"}} {server.value / 2}\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.value = 0.0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/metrics"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def test_a_gauge_policy_grows_the_pool_and_shrinks_it_when_the_gauge_falls(tmp_path):
    gauge = GaugeServer()
    scaling = (f'gauges = {{ sessions = {{ target = 10, url = "{gauge.url}" }} }}\n'
               'evaluation_periods = 2\nscale_in_evaluation_periods = 2\n'
               'instance_warmup = "1s"\nscale_out_cooldown = "0s"\nscale_in_cooldown = "0s"\n')
    config = pool_config(tmp_path, scaling, access_log=False, max_instances=3, drain="1s")
    up = SurgeUp(tmp_path, config).start()
    try:
        up.wait_until_up(timeout=30)
        gauge.value = 30  # summed over its samples, 30 for 1 instance: ceil(1 × 30 / 10) = 3
        wait_for("scale-out to 3 instances", lambda: pool(up)["desired"] == 3, 20)
        out = up.state()["scaling_activity"][-1]
        assert (out["policy"], out["from_desired"], out["to_desired"], out["value"]) == \
            ("gauge:sessions", 1, 3, 30)
        wait_for("3 instances in service", lambda: len(active(up)) == 3, 20)
        gauge.value = 0
        wait_for("scale-in back to 1", lambda: pool(up)["desired"] == 1, 20)
        assert up.state()["scaling_activity"][0]["direction"] == "in"
        assert http("GET", f"{up.gateway}/")[0] == 200
        assert up.terminate(timeout=60) == 0
    finally:
        up.close()
        gauge.close()
