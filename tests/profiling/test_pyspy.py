"""py-spy as ``surge profile`` runs it: the real binary, its real failures, and what the
user is told. Needs root (py-spy reads another process's memory through ptrace): CI runs
as root, and these fail without it rather than skip."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from surge.profiling import ProfileError, pyspy
from surge.profiling.pyspy import Recording, explain_failure, find_py_spy, record, record_argv

BUSY = "import time\ndef spin_for_the_profiler():\n    while True: sum(range(1000))\n" \
       "spin_for_the_profiler()\n"


@pytest.fixture
def busy_python() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def quiet() -> Console:
    return Console(file=io.StringIO())


def py_spy_output(pid: int, **popen: object) -> tuple[int, str]:
    done = subprocess.run([find_py_spy(), "record", "--pid", str(pid), "--duration", "1",
                           "--output", "/dev/null"], capture_output=True, timeout=60,
                          **popen)  # type: ignore[call-overload]
    return done.returncode, (done.stdout + done.stderr).decode()


def recording(pid: int, tmp_path: Path, **fields: object) -> Recording:
    return Recording(name="gateway-1", pid=pid, seconds=1,
                     output=tmp_path / "out.svg", **fields)  # type: ignore[arg-type]


def test_a_real_recording_is_a_flame_graph_with_its_samples(busy_python, tmp_path):
    assert os.geteuid() == 0, "py-spy needs ptrace: run the tests as root (CI does)"
    result = record(recording(busy_python.pid, tmp_path), quiet())
    svg = result.output.read_text()
    assert svg.startswith("<?xml") and "<svg" in svg
    assert "spin_for_the_profiler" in svg
    assert result.samples is not None and result.samples > 20 and result.errors == 0
    assert not result.interrupted


def test_speedscope_output(busy_python, tmp_path):
    output = tmp_path / "out.speedscope.json"
    record(Recording("queue", busy_python.pid, 1, output, format="speedscope"),
           quiet())
    assert '"$schema":"https://www.speedscope.app/file-format-schema.json"' in \
        output.read_text()


def test_permission_denied_says_what_a_non_root_user_needs(busy_python, tmp_path):
    assert os.geteuid() == 0, "this test drops to nobody, which takes root"
    code, said = py_spy_output(busy_python.pid, user=65534, group=65534, cwd="/")
    assert code != 0
    message = explain_failure(recording(busy_python.pid, tmp_path), said, code)
    assert message.startswith("py-spy may not read gateway-1 (pid ")
    assert "kernel.yama.ptrace_scope = 0" in message and "CAP_SYS_PTRACE" in message
    assert "Permission Denied" in message  # py-spy's own words, kept


def test_a_process_that_is_not_python(tmp_path):
    process = subprocess.Popen(["sleep", "30"])
    try:
        code, said = py_spy_output(process.pid)
    finally:
        process.kill()
        process.wait()
    message = explain_failure(recording(process.pid, tmp_path), said, code)
    assert "is not a Python process" in message and 'profile = "nytprof"' in message


def test_a_process_that_is_gone(tmp_path):
    process = subprocess.Popen(["true"])
    process.wait()
    code, said = py_spy_output(process.pid)
    message = explain_failure(recording(process.pid, tmp_path), said, code)
    assert message == (f"gateway-1 (pid {process.pid}) exited before py-spy could sample it; "
                       f"`surge status` shows it now")


def test_py_spy_missing_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(pyspy.sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ProfileError, match=r"pip install 'surge\[profile\]'"):
        find_py_spy()


def test_an_unwritable_output_is_refused_before_sampling(tmp_path):
    with pytest.raises(ProfileError, match="does not exist"):
        record(Recording("queue", os.getpid(), 60, tmp_path / "no" / "x.svg"),
               quiet())


def test_command_line():
    argv = record_argv("py-spy", Recording("gateway-1", 42, 3, Path("/tmp/g.svg"),
                                           format="speedscope", rate=250, subprocesses=True,
                                           idle=True))
    assert argv == ["py-spy", "record", "--pid", "42", "--duration", "3", "--rate", "250",
                    "--format", "speedscope", "--output", "/tmp/g.svg", "--subprocesses",
                    "--idle"]
    assert pyspy.samples_reported("py-spy> Wrote flamegraph data to 'x'. Samples: 199 "
                                  "Errors: 2\n") == (199, 2)
