"""Rendering a pool's or task's NYTProf profiles: what is left out, what is refused."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from surge.profiling import ProfileError
from surge.profiling.nytprof import nytprof_environment
from surge.profiling.nytprof_report import profile_files, render
from surge.profiling.run import ProfileRequest, run_profile
from surge.profiling.targets import PerlProfile

TASK = PerlProfile("resize", "task resize", "resize")


def quiet() -> Console:
    return Console(file=io.StringIO())


def test_a_profile_still_being_written_is_left_out(tmp_path):
    directory = tmp_path / "profiles" / "resize"
    directory.mkdir(parents=True)
    (directory / f"nytprof.out.{os.getpid()}").write_bytes(b"NYTProf")  # this process: alive
    (directory / "nytprof.out.notapid").write_bytes(b"")
    files = profile_files(directory)
    assert files.running == [os.getpid()] and files.finished == []
    with pytest.raises(ProfileError) as caught:
        render(TASK, str(tmp_path), tmp_path / "report", quiet())
    assert f"1 process(es) still running (pid {os.getpid()})" in str(caught.value)
    assert "NYTProf writes a process's profile as it exits" in str(caught.value)


def test_a_pid_reused_by_a_later_process_does_not_hold_a_profile_back(tmp_path):
    old = tmp_path / f"nytprof.out.{os.getpid()}"
    old.write_bytes(b"NYTProf")
    os.utime(old, (1_000_000, 1_000_000))  # written long before this process started
    assert profile_files(tmp_path).finished == [old]


def test_nothing_there_yet(tmp_path):
    with pytest.raises(ProfileError, match="nothing has run there with profile = \"nytprof\""):
        render(TASK, str(tmp_path), tmp_path / "report", quiet())


def test_a_directory_that_is_not_a_report_is_never_replaced(tmp_path):
    directory = tmp_path / "profiles" / "resize"
    directory.mkdir(parents=True)
    (directory / "nytprof.out.1").write_bytes(b"NYTProf")
    os.utime(directory / "nytprof.out.1", (1_000_000, 1_000_000))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ProfileError, match="not an NYTProf report; name a new or empty"):
        render(TASK, str(tmp_path), mine, quiet())
    assert (mine / "notes.txt").read_text() == "keep"


def test_py_spy_options_are_refused_for_a_perl_profile(tmp_path):
    (tmp_path / "profiles" / "resize").mkdir(parents=True)
    request = ProfileRequest(name="resize", data_dir=str(tmp_path), seconds=3, idle=True)

    def no_admin() -> None:
        raise AssertionError("a profile on disk needs no admin API")

    with pytest.raises(ProfileError, match=r"^--seconds --idle: py-spy options, but resize"):
        run_profile(request, no_admin, quiet(), quiet())


def test_a_stopped_surge_up_and_an_unknown_name(tmp_path):
    """No admin API (surge up stopped) and no such profile on disk: both said."""
    (tmp_path / "profiles" / "resize").mkdir(parents=True)
    from surge.supervisor.admin_client import AdminClient

    request = ProfileRequest(name="gateway-1", data_dir=str(tmp_path))
    with pytest.raises(ProfileError) as caught:
        run_profile(request, lambda: AdminClient("http://127.0.0.1:9", "token"), quiet(),
                    quiet())
    assert "cannot reach the admin API at http://127.0.0.1:9" in str(caught.value)
    assert str(caught.value).endswith("(profiles on disk: resize)")
    assert not Path("gateway-1-profile.svg").exists()


def test_a_profile_cut_short_is_left_out_and_named(tmp_path):
    directory = tmp_path / "profiles" / "resize"
    directory.mkdir(parents=True)
    env = {**os.environ, **nytprof_environment(directory, {}, {})}
    for _ in range(2):
        subprocess.run(["perl", "-e", "sub resize_one { 1 } resize_one() for 1 .. 100"],
                       env=env, check=True, timeout=30)
    whole, killed = sorted(directory.glob("nytprof.out.*"))
    data = killed.read_bytes()
    killed.write_bytes(data[: len(data) // 2])  # as a process killed while writing leaves it
    rendered = render(TASK, str(tmp_path), tmp_path / "report", quiet())
    assert rendered.profiles == 1 and rendered.cut_short == [killed]
    assert any("main::resize_one" in page.read_text()
               for page in (tmp_path / "report").glob("*.html"))
    killed.unlink()
    whole.write_bytes(whole.read_bytes()[:100])
    with pytest.raises(ProfileError, match="every finished profile of task resize"):
        render(TASK, str(tmp_path), tmp_path / "report", quiet())
