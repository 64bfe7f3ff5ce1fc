"""``surge profile`` against a real ``surge up``: a py-spy flame graph of a gateway under
load, and the NYTProf reports of the Perl example's Starman pool and persistent handler.
py-spy needs root (ptrace): CI runs as root; without it these fail rather than skip."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from integration.examples_flow import python_example_config, submit, wait_succeeded
from integration.surge_up import EXAMPLES, RequestLoop, SurgeUp, http

PERL_EXAMPLE = EXAMPLES / "perl-legacy"


def surge_profile(up: SurgeUp, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "surge.cli", "profile", *args, "--admin", up.admin,
         "--data-dir", str(up.data_dir)],
        capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture
def python_up(tmp_path):
    config = python_example_config(tmp_path)
    # One gateway process takes all the load, so its profile is full of it.
    config.write_text(config.read_text().replace("processes = 2\n", "processes = 1\n", 1))
    up = SurgeUp(tmp_path, config).start()
    try:
        up.wait_until_up(timeout=90)
        yield up
    finally:
        up.close()


def test_flame_graph_of_a_live_gateway(python_up, tmp_path):
    svg = tmp_path / "gateway.svg"
    with RequestLoop(python_up.gateway_port, "/", clients=4) as load:
        done = surge_profile(python_up, "gateway-1", "--seconds", "2", "--out", str(svg),
                             cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert load.answered > 0
    summary = done.stdout.splitlines()
    assert re.fullmatch(r"flame graph of gateway-1 \(pid \d+\), \d+\.\d s: (\d+) samples, "
                        r"0 errors", summary[0]), summary
    assert summary[1] == str(svg)
    assert int(summary[0].split(": ")[1].split()[0]) > 10
    graph = svg.read_text()
    assert graph.startswith("<?xml") and "<svg" in graph
    # Frames of the process serving the port (a child of gateway-1), not just of its parent.
    assert "HttpConnection.data_received (surge/gateway/http/protocol.py" in graph

    unknown = surge_profile(python_up, "gatway-1", cwd=tmp_path)
    assert unknown.returncode == 1
    assert "no process or profile named 'gatway-1'. Did you mean gateway-1?" in unknown.stderr
    assert "Known: gateway-1, queue, web-1, worker-images-1" in unknown.stderr


def perl_config(tmp_path: Path) -> Path:
    text = (PERL_EXAMPLE / "surge.toml").read_text()
    text = text.replace("[pools.web]\n",
                        f'[pools.web]\nprofile = "nytprof"\ndirectory = "{PERL_EXAMPLE}"\n', 1)
    text = text.replace('mode = "persistent", processes = 2 }',
                        f'mode = "persistent", processes = 2, profile = "nytprof", '
                        f'directory = "{PERL_EXAMPLE}" }}')
    text = text.replace('root = "static"', f'root = "{PERL_EXAMPLE / "static"}"')
    assert text.count('profile = "nytprof"') == 2
    config = tmp_path / "surge.toml"
    config.write_text(text)
    return config


def test_nytprof_reports_of_the_perl_example(tmp_path):
    up = SurgeUp(tmp_path, perl_config(tmp_path)).start()
    try:
        up.wait_until_up(timeout=90)
        for _ in range(5):
            assert http("GET", f"{up.gateway}/echo")[0] == 200
        record = wait_succeeded(up, submit(up, {"width": 64, "height": 48, "seed": 3}))
        assert record["result"]["bytes"] == 64 * 48
        state = up.state()
        assert state["pools"]["web"]["profile"] == "nytprof"
        assert state["workers"]["images"]["profiles"] == {"process_image": "nytprof"}
        # The persistent handler is still running: its profile is not written yet.
        early = surge_profile(up, "process_image", cwd=tmp_path)
        assert early.returncode == 1
        assert "still running" in early.stderr and "as it exits" in early.stderr
        assert up.terminate(timeout=60) == 0, up.log_tail()
    finally:
        up.close()

    # surge up is stopped: the profiles are found in the data dir alone.
    handler = surge_profile(up, "process_image", cwd=tmp_path)
    assert handler.returncode == 0, handler.stderr
    assert handler.stdout.startswith("NYTProf report of process_image from 1 process profile")
    index = Path(handler.stdout.splitlines()[-1])
    assert index == tmp_path / "process_image-nytprof" / "index.html" and index.is_file()
    # nytprofhtml names a page after the script path as perl saw it (relative or absolute).
    [script_report] = index.parent.glob("*process_image-pl-*-line.html")
    subs = set(re.findall(r"main::(\w+)", script_report.read_text()))
    assert {"process_image", "dimension", "thumbnail_size", "run_persistent"} <= subs

    # Starman's master and its 4 workers, each stopped by SIGTERM (twice, for a worker): every
    # profile whole, or nytprofmerge would refuse it.
    pool = surge_profile(up, "web-1", "--out", str(tmp_path / "web-report"), cwd=tmp_path)
    assert pool.returncode == 0, pool.stderr
    assert pool.stdout.startswith("NYTProf report of pool web from 5 process profile(s) "
                                  "(web-1 is one of its instances")
    pages = [page.name for page in (tmp_path / "web-report").glob("*.html")]
    assert any("app-psgi" in page for page in pages), pages
