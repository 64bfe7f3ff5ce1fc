"""Secrets kept in the data directory (the admin token, the queue server's receipt key):
made once, written whole, readable by their owner only.

A new file is written under a temporary name (``mkstemp``: mode 0600), flushed to disk and
linked into place, so a crash never leaves a half-written secret, and of two processes
starting at the same moment the second keeps the first one's (``link`` fails rather than
replace it). A file that other users may read is refused, as ssh refuses such a key.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from surge.errors import SurgeError


def ensure_private_file(path: Path, make: Callable[[], str], what: str,
                        error: type[SurgeError], missing_hint: str = "") -> str:
    """The text of ``path`` (stripped), written first with ``make()`` if it is missing."""
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            try:
                with os.fdopen(descriptor, "w") as file:
                    file.write(make() + "\n")
                    file.flush()
                    os.fsync(file.fileno())
                os.link(temporary, path)
            finally:
                os.unlink(temporary)
        except FileExistsError:
            pass
        except OSError as exc:
            raise error(f"cannot create the {what} {path}: {exc.strerror}") from exc
    return read_private_file(path, what, error, missing_hint)


def read_private_file(path: Path, what: str, error: type[SurgeError],
                      missing_hint: str = "") -> str:
    """The text of ``path`` (stripped); ``error`` if it is missing, unreadable or open to
    other users."""
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except FileNotFoundError:
        raise error(f"no {what} at {path}{missing_hint}") from None
    except OSError as exc:
        raise error(f"cannot read the {what} {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise error(f"the {what} {path} is open to other users (mode "
                    f"{stat.S_IMODE(mode):04o}): run chmod 600 {path}")
    return text.strip()
