"""``surge simulate`` from the command line: a chart file and a summary, or a precise error."""

import xml.etree.ElementTree as ET

from click.testing import CliRunner

from surge.cli import main

CONFIG = """
[pools.web]
command = "app --port {port}"
instances = { min = 2, max = 20, desired = 2 }
[pools.web.scaling]
cpu = 70
period = "30s"
[queues.jobs]
[workers.jobs]
queue = "jobs"
handlers = { work = "tasks:work" }
instances = { min = 1, max = 10, desired = 1 }
[workers.jobs.scaling]
backlog_per_worker = 5
[[routes]]
prefix = "/"
proxy = { pool = "web" }
"""


def _run(tmp_path, *args):
    config = tmp_path / "surge.toml"
    config.write_text(CONFIG)
    return CliRunner().invoke(main, ["simulate", "-c", str(config), *args])


def test_pool_simulation_writes_a_chart_and_prints_the_activity(tmp_path):
    chart = tmp_path / "fleet.svg"
    result = _run(tmp_path, "--profile", "0:0, 5m:5000, 10m:5000, 11m:0, 30m:0",
                  "--capacity", "500", "-o", str(chart))
    assert result.exit_code == 0, result.output
    assert "surge simulate: pool web" in result.output
    assert "scale out: cpu" in result.output and "scale in: cpu" in result.output
    ET.fromstring(chart.read_text())  # well-formed SVG


def test_worker_group_simulation(tmp_path):
    chart = tmp_path / "workers.svg"
    result = _run(tmp_path, "--workers", "jobs", "--profile", "0:50, 2m:50, 3m:0, 20m:0",
                  "-o", str(chart))
    assert result.exit_code == 0, result.output
    assert "scale out: backlog_per_worker" in result.output
    assert chart.exists()


def test_errors_name_the_option_and_value(tmp_path):
    result = _run(tmp_path, "--profile", "0:0, 5q:10")
    assert result.exit_code == 2 and "bad time '5q'" in result.output
    result = _run(tmp_path, "--profile", "0:0, 5m:10", "--pool", "nope")
    assert result.exit_code == 2 and "--pool 'nope'" in result.output and "['web']" in result.output
    result = _run(tmp_path, "--profile", "0:0, 5m:10", "--capacity", "0")
    assert result.exit_code == 2 and "must be > 0" in result.output
