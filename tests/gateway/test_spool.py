"""Temporary files for bodies: unnamed, read back at any offset, and a temporary directory
that is checked before the gateway starts."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from surge.gateway.errors import TempFileError
from surge.gateway.spool import TempFiles, prepare_temp_dir, temp_dir_of


def test_a_temp_file_has_no_name_and_reads_back_what_was_appended(tmp_path: Path) -> None:
    files = TempFiles(str(tmp_path), keep_idle=0)
    file = files.new()
    try:
        file.append(b"hello ")
        file.append(memoryview(b"world"))
        assert os.listdir(tmp_path) == []  # gone with its descriptor, even on kill -9
        assert (file.size, file.read(0, 100), file.read(6, 3)) == (11, b"hello world", b"wor")
        file.clear()
        file.append(b"again")
        assert (file.size, file.read(0, 100)) == (5, b"again")
        assert os.fstat(file.fd).st_size == 5  # the space is given back
    finally:
        file.close()
    file.close()  # twice is harmless


def test_closed_files_are_kept_emptied_for_the_next_request(tmp_path: Path) -> None:
    files = TempFiles(str(tmp_path), keep_idle=1)
    first, second = files.new(), files.new()
    first.append(b"secret of the first request")
    kept = first.fd
    first.close()
    second.close()  # one more than keep_idle: really closed
    assert files.idle == [kept] and os.fstat(kept).st_size == 0
    third = files.new()
    assert third.fd == kept and third.size == 0 and third.read(0, 100) == b""
    third.close()
    files.close()
    assert files.idle == []
    with pytest.raises(OSError):
        os.fstat(kept)


def test_the_temp_dir_is_made_checked_and_rid_of_what_a_crash_left(tmp_path: Path) -> None:
    temp_dir = temp_dir_of(str(tmp_path / "data"))
    assert temp_dir == str(tmp_path / "data" / "tmp")
    prepare_temp_dir(temp_dir)
    old, new = Path(temp_dir, "surge-body-1-1"), Path(temp_dir, "surge-body-1-2")
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    prepare_temp_dir(temp_dir)
    assert sorted(os.listdir(temp_dir)) == ["surge-body-1-2"]  # another process may own it


def test_an_unusable_temp_dir_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the data directory should be")
    temp_dir = temp_dir_of(str(tmp_path / "data"))
    with pytest.raises(TempFileError, match=f"{temp_dir}.*data_dir"):
        prepare_temp_dir(temp_dir)
    with pytest.raises(TempFileError, match="nowhere"):
        TempFiles(str(tmp_path / "nowhere")).new()
