"""Running Perl under Devel::NYTProf: which commands may be (``profile = "nytprof"`` is
checked up front) and the environment that turns it on.

A profiled pool instance or command handler keeps its command and gets
``PERL5OPT=-d:NYTProf``, so ``perl script.pl`` and a Perl program started by its ``#!``
line (starman, plackup) are profiled alike, and ``NYTPROF`` naming the output,
``DATA_DIR/profiles/<name>/nytprof.out.<pid>``:

- ``addpid=1``: every process its own file. Starman's pre-forked workers need nothing more:
  NYTProf notices a fork and names the child's file by its own pid.
- ``sigexit=int,hup,term``: NYTProf writes a profile from an END block, which a signal's
  default action skips; surge stops a pool instance with SIGTERM (and a persistent handler
  that outlives its grace period), so those signals finish the profile and exit instead.
  Starman's processes catch SIGTERM themselves and ``exit``, which runs END blocks too —
  but its workers get SIGTERM twice (from surge, to the group, and from their master), and
  the second, arriving during the END blocks, would kill them there: ``perl/SurgeNYTProf.pm``
  (``-MSurgeNYTProf``) makes ``exit`` ignore the stop signals and finish the profile first.

Nothing here imports rich or runs py-spy: the settings, the supervisor and the workers use it.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from surge.config.settings import Settings

NYTPROF = "nytprof"
PROFILES_DIR = "profiles"
PROFILE_FILE_PREFIX = "nytprof.out."
NYTPROF_SIGNALS = "int,hup,term"
# A profile directory is named after its pool or task: kept to names that are safe as one
# path component and in NYTPROF, whose options are separated by ':'.
# Makes a process that exits finish its profile first, whatever signals follow (see the file).
GUARD_MODULE = "SurgeNYTProf"
PERL_LIB = Path(__file__).resolve().parent / "perl"
_PROFILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_PERL_NAME = re.compile(r"perl[\d.]*")
_INSTALL_HINT = "Debian: apt-get install libdevel-nytprof-perl; CPAN: cpanm Devel::NYTProf"


def profile_dir(data_dir: str | Path, name: str) -> Path:
    """Where the NYTProf files of pool or task ``name`` go (absolute: a handler runs in its
    own directory)."""
    return Path(data_dir).resolve() / PROFILES_DIR / name


def nytprof_environment(directory: Path, env: Mapping[str, str],
                        inherited: Mapping[str, str]) -> dict[str, str]:
    """The variables to add to ``env`` (the command's own, over ``inherited``) so that perl
    profiles itself into ``directory``; a PERL5OPT or PERL5LIB already there is kept after
    ours."""
    def earlier(name: str) -> str:
        return env.get(name, inherited.get(name, ""))

    return {
        "PERL5OPT": f"-d:NYTProf -M{GUARD_MODULE} {earlier('PERL5OPT')}".strip(),
        "PERL5LIB": os.pathsep.join(part for part in (str(PERL_LIB), earlier("PERL5LIB"))
                                    if part),
        "NYTPROF": f"file={directory / 'nytprof.out'}:addpid=1:sigexit={NYTPROF_SIGNALS}",
    }


def make_profile_dir(data_dir: str | Path, name: str, *, user: str | None = None,
                     group: str | None = None) -> Path:
    """Make ``name``'s profile directory before its processes start (perl cannot start under
    NYTProf when the directory of its output file is missing), owned by the user they run as
    (``surge up --user``)."""
    directory = profile_dir(data_dir, name)
    directory.mkdir(parents=True, exist_ok=True)
    if user:
        shutil.chown(directory, user, group)
    elif group:
        shutil.chown(directory, group=group)
    return directory


def prepared_environment(data_dir: str | Path, name: str, env: Mapping[str, str],
                         inherited: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` with NYTProf turned on for ``name``, its profile directory made."""
    directory = make_profile_dir(data_dir, name)
    return {**env, **nytprof_environment(directory, env,
                                         os.environ if inherited is None else inherited)}


@dataclass(frozen=True, slots=True)
class ProfiledCommand:
    """A pool or command handler with ``profile`` set, as the settings describe it."""

    key: str  # "pools.web.profile", "workers.images.handlers.process_image.profile"
    name: str  # its profile directory: the pool's or the task's name
    command: str
    cwd: str
    env: Mapping[str, str]


def profiled_commands(settings: Settings) -> list[ProfiledCommand]:
    from surge.config.settings import CommandHandler

    config_dir = Path(settings.config_dir)
    found = [ProfiledCommand(f"pools.{name}.profile", name, pool.command,
                             str(config_dir / (pool.directory or ".")), pool.env)
             for name, pool in settings.pools.items() if pool.profile]
    for group, worker in settings.workers.items():
        for task, handler in worker.handlers.items():
            if isinstance(handler, CommandHandler) and handler.profile:
                found.append(ProfiledCommand(
                    f"workers.{group}.handlers.{task}.profile", task, handler.command,
                    str(config_dir / (handler.directory or ".")), handler.env))
    return found


def profile_problems(settings: Settings) -> list[str]:
    """What makes a ``profile = "nytprof"`` setting unusable, one line each, naming the key:
    a command that does not run perl, Devel::NYTProf missing, a profile directory two things
    would share, a data_dir NYTPROF cannot name."""
    profiled = profiled_commands(settings)
    problems: list[str] = []
    owners: dict[str, str] = {}
    interpreters: set[str] = set()
    for item in profiled:
        if not _PROFILE_NAME.fullmatch(item.name):
            problems.append(f"{item.key}: {item.name!r} names its profile directory; profile "
                            f"only what is named with letters, digits, '_', '.' and '-'")
        elif item.name in owners:
            problems.append(f"{item.key}: its profile would share "
                            f"data_dir/{PROFILES_DIR}/{item.name} with {owners[item.name]}; "
                            f"profile one of them")
        owners.setdefault(item.name, item.key.removesuffix(".profile"))
        interpreter, problem = perl_interpreter(item)
        if problem:
            problems.append(f"{item.key}: {problem}")
        elif interpreter:
            interpreters.add(interpreter)
    for interpreter in sorted(interpreters):
        if not nytprof_loads(interpreter):
            problems.append(f"{profiled[0].key}: \"nytprof\" needs the Perl module "
                            f"Devel::NYTProf, which {interpreter} cannot load ({_INSTALL_HINT})")
    data_dir = str(Path(settings.data_dir).resolve())
    if profiled and ":" in data_dir:
        problems.append(f"data_dir: {data_dir!r} holds ':', which separates the options of "
                        f"NYTPROF, so {profiled[0].key} cannot name its output there; use a "
                        f"data_dir without ':'")
    if profiled and os.pathsep in str(PERL_LIB):
        problems.append(f"{profiled[0].key}: surge is installed in {PERL_LIB.parent}, whose "
                        f"path holds {os.pathsep!r}, which PERL5LIB cannot name")
    return problems


def perl_interpreter(item: ProfiledCommand) -> tuple[str | None, str | None]:
    """The perl that ``item``'s command runs, or why it runs none (a problem to report)."""
    if not item.command:
        return None, "a pool of fixed 'targets' runs no command to profile"
    try:
        words = shlex.split(item.command)
    except ValueError as exc:
        return None, f"cannot read the command {item.command!r}: {exc}"
    if not words:
        return None, "the command is empty"
    program = find_program(words[0], item.cwd, item.env)
    if program is None:
        return None, (f"cannot check that the command runs perl: {words[0]!r} is not found "
                      f"{'in ' + item.cwd if '/' in words[0] else 'on PATH'}")
    if _PERL_NAME.fullmatch(program.name):
        return str(program), None
    interpreter = script_interpreter(program)
    if interpreter is not None and _PERL_NAME.fullmatch(Path(interpreter).name):
        return interpreter, None
    runs = f"its #! line runs {interpreter}" if interpreter else "it is not a #! script"
    return None, (f"\"nytprof\" runs the command under Devel::NYTProf, a Perl profiler, but "
                  f"{words[0]!r} ({program}) is neither perl nor a Perl script ({runs}); "
                  f"`surge profile NAME` samples a running Python process with py-spy "
                  f"without any setting")


def find_program(word: str, cwd: str, env: Mapping[str, str]) -> Path | None:
    """Where the command's first word leads, as the child's ``exec`` would find it: a path
    relative to the command's directory, or a name on the child's PATH (surge puts its own
    virtualenv's ``bin`` first)."""
    if "/" in word:
        candidate = Path(cwd) / word
        return candidate if candidate.is_file() else None
    search = env.get("PATH") or os.pathsep.join(
        part for part in (str(Path(sys.executable).parent), os.environ.get("PATH", "")) if part)
    found = shutil.which(word, path=search)
    return Path(found) if found else None


def script_interpreter(program: Path) -> str | None:
    """The interpreter a ``#!`` line names (through ``env``), or None for no ``#!`` line."""
    try:
        with program.open("rb") as script:
            first_line = script.readline(512)
    except OSError:
        return None
    if not first_line.startswith(b"#!"):
        return None
    words = first_line[2:].decode(errors="replace").split()
    if words and Path(words[0]).name == "env":
        # "#!/usr/bin/env perl", "#!/usr/bin/env -S perl -w": the first operand is the program.
        operands = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        return (shutil.which(operands[0]) or operands[0]) if operands else None
    return words[0] if words else None


@functools.lru_cache(maxsize=8)
def nytprof_loads(perl: str) -> bool:
    """Whether ``perl`` has Devel::NYTProf (its XS core: loading it starts no profile)."""
    try:
        return subprocess.run([perl, "-MDevel::NYTProf::Core", "-e", "1"],
                              stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
