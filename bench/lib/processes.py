"""Starting the servers a benchmark measures, and measuring their memory."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
from bench.lib.loadgen import raise_nofile

SURGE = str(Path(sys.executable).parent / "surge")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, argv: list[str], cwd: Path | None = None) -> None:
        self.popen = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, preexec_fn=raise_nofile)

    def read_listening(self) -> int:
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if not line:
            raise RuntimeError("the server did not start")
        return int(json.loads(line)["port"])

    def family(self) -> list[psutil.Process]:
        root = psutil.Process(self.popen.pid)
        return [root, *root.children(recursive=True)]

    def rss(self) -> int:
        total = 0
        for process in self.family():
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            for process in self.family():
                try:
                    process.kill()
                except psutil.NoSuchProcess:
                    pass
            self.popen.wait()
            return None


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port}")


NGINX_CONFIG = """
worker_processes {workers};
worker_rlimit_nofile 20000;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 19500; multi_accept on; }}
http {{
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 1000000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 0.0.0.0:{port} reuseport backlog=4096;
        location = /health {{ default_type text/plain; return 200 "OK"; }}
        {extra}
    }}
}}
"""


def start_nginx(directory: Path, workers: int, extra: str = "") -> tuple[Server, int]:
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "nginx.conf"
    config.write_text(NGINX_CONFIG.format(workers=workers, dir=directory, port=port,
                                          extra=extra))
    server = Server(["nginx", "-c", str(config), "-p", str(directory)])
    wait_for_port(port)
    return server, port


def kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
