"""Children's output becomes JSON lines tagged with the process name."""

import io

import orjson

from surge.supervisor.logs import LogSink


def test_child_lines_are_tagged_json():
    out = io.BytesIO()
    sink = LogSink(out)
    sink.child_lines("gateway-1", "stdout", ['{"event": "listening", "port": 1}', "plain"])
    sink.event("child_started", child="web-1", pid=42)
    records = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert records[0]["proc"] == "gateway-1"
    assert records[0]["line"] == '{"event": "listening", "port": 1}'
    assert records[1]["line"] == "plain" and records[1]["stream"] == "stdout"
    assert records[2]["proc"] == "supervisor" and records[2]["event"] == "child_started"
    assert records[2]["pid"] == 42


def test_closed_output_does_not_break_supervision():
    out = io.BytesIO()
    out.close()
    LogSink(out).event("anything")  # no exception


def test_terminal_mode_prints_readable_lines(capsys):
    sink = LogSink(pretty=True)
    sink.child_lines("web-1", "stderr", ["[not markup] plain"])
    sink.event("child_exited", level="warning", child="web-1", exit_code=-9)
    out = capsys.readouterr().out
    assert "web-1 │ [not markup] plain" in out
    assert "child_exited" in out and "exit_code=-9" in out
