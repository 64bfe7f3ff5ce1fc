"""The readings' pure parts: CPU from process times, targets from access log lines, gauges
from Prometheus text; and the CPU meter on a real busy process."""

import subprocess
import sys
import time

import pytest

from surge.autoscale.cpu import CpuMeter, utilization
from surge.autoscale.gauge import gauge_value
from surge.autoscale.requests import RequestTally, per_minute, target_of


def test_utilization_of_a_process_tree():
    # 1.5 CPU seconds over 1 s on 2 cores → 75 %. pid 3 is new: it counts from zero;
    # pid 2 exited: its last slice is not seen.
    previous = {1: 10.0, 2: 4.0}
    current = {1: 11.0, 3: 0.5}
    assert utilization(previous, current, 1.0, 2) == 75.0
    assert utilization(previous, current, 0.0, 2) is None


def test_cpu_meter_sees_a_busy_child():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        meter = CpuMeter()
        assert meter.sample("web-1", busy.pid, time.monotonic(), 1) is None  # first sample
        time.sleep(0.5)
        value = meter.sample("web-1", busy.pid, time.monotonic(), 1)
        assert value is not None and value > 50
    finally:
        busy.kill()
        busy.wait()
    assert meter.sample("web-1", busy.pid, time.monotonic(), 1) is None  # gone: no data
    meter.forget_except(set())


def test_target_of_an_access_log_line():
    line = ('{"time":1.0,"client":"127.0.0.1","method":"GET","path":"/","status":200,'
            '"bytes":2,"duration":0.001,"target":"127.0.0.1:5001","target_status":200}')
    assert target_of(line) == "127.0.0.1:5001"
    assert target_of('{"path":"/static/a.css","status":200}') is None
    assert target_of("INFO started") is None


def test_request_tally_counts_per_target():
    tally = RequestTally()
    tally.observe(['{"target":"a:1"}', '{"target":"b:2"}', '{"target":"a:1"}', "noise"])
    assert dict(tally.counts) == {"a:1": 2, "b:2": 1}
    tally.forget_except({"a:1"})
    assert dict(tally.counts) == {"a:1": 2}
    assert per_minute(50, 10.0) == 300.0


PROMETHEUS = """# HELP app_busy Busy workers.
# TYPE app_busy gauge
app_busy{worker="1"} 2
app_busy{worker="2"} 3.5
app_busy_total 99
other 7
"""


@pytest.mark.parametrize(("name", "value"), [("app_busy", 5.5), ("other", 7.0),
                                             ("app_busy_total", 99.0), ("missing", None)])
def test_gauge_value_sums_the_samples(name, value):
    assert gauge_value(PROMETHEUS, name) == value


def test_fetch_gauge_from_a_prometheus_endpoint():
    import asyncio
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from surge.autoscale.gauge import fetch_gauge

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self):
            body = PROMETHEUS.encode()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert asyncio.run(fetch_gauge(f"{base}/metrics", "app_busy")) == 5.5
        assert asyncio.run(fetch_gauge(f"{base}/nothing", "app_busy")) is None  # 404
        assert asyncio.run(fetch_gauge("http://127.0.0.1:1/metrics", "app_busy")) is None
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
