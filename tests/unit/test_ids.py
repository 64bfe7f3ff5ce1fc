"""Random UUIDs: valid version-4 strings, all distinct, never repeated by a forked child."""

import subprocess
import sys
import uuid

from surge.ids import random_uuid


def test_ids_are_version_4_uuids_and_distinct():
    ids = [random_uuid() for _ in range(5000)]  # several refills of the random buffer
    assert len(set(ids)) == len(ids)
    for text in ids[:600]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


FORK_CHECK = """
import os
from surge.ids import random_uuid

random_uuid()  # the buffer now holds ids not yet handed out
read_end, write_end = os.pipe()
pid = os.fork()
if pid == 0:  # the child: report its next ids, then leave at once
    os.close(read_end)
    os.write(write_end, ",".join(random_uuid() for _ in range(10)).encode())
    os._exit(0)
os.close(write_end)
with os.fdopen(read_end) as pipe:
    child_ids = set(pipe.read().split(","))
os.waitpid(pid, 0)
parent_ids = {random_uuid() for _ in range(10)}
assert len(child_ids) == 10 and not child_ids & parent_ids, "the child repeated ids"
"""


def test_a_forked_child_does_not_repeat_its_parents_next_ids():
    # In a process of its own: forking the test runner, which may have threads, is unsafe.
    done = subprocess.run([sys.executable, "-c", FORK_CHECK], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
