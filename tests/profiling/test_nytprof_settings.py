"""``profile = "nytprof"`` on a pool or command handler: checked up front (the key named),
and the environment that runs perl under Devel::NYTProf."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from surge.config.loader import default_config_text, load_settings, validate_settings
from surge.errors import ConfigError
from surge.profiling.nytprof import (
    GUARD_MODULE,
    PERL_LIB,
    nytprof_environment,
    profile_dir,
    script_interpreter,
)
from surge.supervisor.specs import pool_instance_spec
from surge.worker.handlers.persistent import PersistentCommandHandler
from surge.worker.handlers.python import ExecutorPools
from surge.worker.handlers.registry import build_handlers

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "perl-legacy"


def config(tmp_path: Path, *, pool: dict | None = None, handler: dict | None = None) -> dict:
    raw: dict = {"config_dir": str(tmp_path), "data_dir": str(tmp_path / "data"),
                 "queues": {"q": {}}}
    if pool is not None:
        raw["pools"] = {"web": pool}
    if handler is not None:
        raw["workers"] = {"w": {"queue": "q", "handlers": {"resize": handler}}}
    return raw


def problems(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        validate_settings(raw)
    return caught.value.problems


def script(tmp_path: Path, name: str, first_line: str) -> Path:
    path = tmp_path / name
    path.write_text(f"{first_line}\nprint 1;\n")
    path.chmod(0o755)
    return path


def perl_example(tmp_path: Path) -> dict:
    """The Perl example's Starman pool and persistent handler, both profiled."""
    return config(tmp_path, pool={"command": "starman --listen 127.0.0.1:{port} app.psgi",
                                  "directory": str(EXAMPLE), "profile": "nytprof"},
                  handler={"command": "perl process_image.pl --persistent",
                           "mode": "persistent", "directory": str(EXAMPLE),
                           "profile": "nytprof"})


def test_the_perl_example_may_be_profiled_in_both_places(tmp_path):
    settings = validate_settings(perl_example(tmp_path))
    assert settings.pools["web"].profile == "nytprof"


def test_a_python_pool_is_refused_naming_the_key(tmp_path):
    # The embedded default's pool runs granian, a Python program.
    text = default_config_text().replace("[pools.web]\n", '[pools.web]\nprofile = "nytprof"\n')
    path = tmp_path / "surge.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    found = caught.value.problems
    assert len(found) == 1 and found[0].startswith(f"{path}: pools.web.profile: "), found
    assert "'granian'" in found[0] and "neither perl nor a Perl script" in found[0]


def test_a_binary_that_is_not_perl_is_refused(tmp_path):
    found = problems(config(tmp_path, handler={"command": "sleep 1", "profile": "nytprof"}))
    assert found[0].startswith("<config>: workers.w.handlers.resize.profile: "), found
    assert "not a #! script" in found[0]


def test_scripts_are_judged_by_their_first_line(tmp_path):
    script(tmp_path, "tool.pl", "#!/usr/bin/env perl")
    script(tmp_path, "tool.py", f"#!{sys.executable}")
    validate_settings(config(tmp_path, handler={"command": "./tool.pl",
                                                "profile": "nytprof"}))
    found = problems(config(tmp_path, handler={"command": "./tool.py", "profile": "nytprof"}))
    assert f"its #! line runs {sys.executable}" in found[0]
    assert script_interpreter(script(tmp_path, "w.pl", "#! /usr/bin/perl5.36 -w")) == \
        "/usr/bin/perl5.36"


def test_a_missing_program_and_fixed_targets_are_named(tmp_path):
    found = problems(config(tmp_path, handler={"command": "./nowhere.pl",
                                               "profile": "nytprof"}))
    assert "'./nowhere.pl' is not found in" in found[0]
    found = problems(config(tmp_path, pool={"targets": ["127.0.0.1:9"], "profile": "nytprof"}))
    assert found == ["<config>: pools.web.profile: a pool of fixed 'targets' runs no command "
                     "to profile"]


def test_only_nytprof_is_known(tmp_path):
    found = problems(config(tmp_path, handler={"command": "perl x.pl", "profile": "perf"}))
    # A handler is one of three forms: pydantic explains each; the command form's line names
    # the key and what it takes.
    assert "<config>: workers.w.handlers.resize.CommandHandler.profile: Input should be " \
           "'nytprof' (got 'perf')" in found, found


def test_two_profiles_may_not_share_a_directory(tmp_path):
    raw = config(tmp_path, pool={"command": "perl app.pl {port}", "profile": "nytprof"})
    raw["workers"] = {"w": {"queue": "q", "handlers": {
        "web": {"command": "perl x.pl", "profile": "nytprof"}}}}
    found = problems(raw)
    assert any("workers.w.handlers.web.profile: its profile would share "
               "data_dir/profiles/web with pools.web" in line for line in found), found


def test_environment_adds_nytprof_and_keeps_what_was_there():
    directory = Path("/var/surge/profiles/web")
    env = nytprof_environment(directory, {"PERL5LIB": "/app/lib"}, {"PERL5OPT": "-Mstrict"})
    assert env["PERL5OPT"] == f"-d:NYTProf -M{GUARD_MODULE} -Mstrict"
    assert env["PERL5LIB"] == f"{PERL_LIB}{os.pathsep}/app/lib"
    assert env["NYTPROF"] == ("file=/var/surge/profiles/web/nytprof.out:addpid=1:"
                              "sigexit=int,hup,term")
    assert (PERL_LIB / f"{GUARD_MODULE}.pm").is_file()


def test_the_guard_module_loads_and_exit_still_sets_the_status(tmp_path):
    """SurgeNYTProf overrides exit: a profiled program exits with its own status and a whole
    profile."""
    env = {**os.environ, **nytprof_environment(tmp_path, {}, {})}
    done = subprocess.run(["perl", "-e", "exit 7"], env=env, capture_output=True, timeout=30)
    assert done.returncode == 7, done.stderr
    written = list(tmp_path.glob("nytprof.out.*"))
    assert len(written) == 1
    check = subprocess.run(["perl", "-MDevel::NYTProf::Data", "-e",
                            "Devel::NYTProf::Data->new({filename => $ARGV[0], quiet => 1})",
                            str(written[0])], capture_output=True, timeout=30)
    assert check.returncode == 0, check.stderr


def test_pool_instances_and_handlers_get_the_environment(tmp_path):
    settings = validate_settings(perl_example(tmp_path))
    spec = pool_instance_spec(settings, "web", settings.pools["web"], 1, 5000)
    assert spec.env["NYTPROF"].startswith(f"file={tmp_path}/data/profiles/web/nytprof.out:")
    assert spec.argv[0] == "starman"  # the command itself is unchanged
    pools = ExecutorPools(1, [])
    try:
        handlers = build_handlers(settings.workers["w"], settings.config_dir, pools,
                                  settings.data_dir)
    finally:
        pools.shutdown()
    handler = handlers["resize"]
    assert isinstance(handler, PersistentCommandHandler)
    directory = profile_dir(settings.data_dir, "resize")
    assert handler.spec.env["NYTPROF"].startswith(f"file={directory}/nytprof.out:")
    assert directory.is_dir()  # made before perl starts: NYTProf cannot start without it


def test_unprofiled_commands_are_untouched(tmp_path):
    settings = load_settings()
    spec = pool_instance_spec(settings, "web", settings.pools["web"], 1, 5000)
    assert "NYTPROF" not in spec.env and "PERL5OPT" not in spec.env
