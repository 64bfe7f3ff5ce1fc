"""The versioned target list the gateways follow."""

from surge.supervisor.targets import TargetTable


def test_register_bumps_version_once():
    table = TargetTable(["web"])
    start = table.version
    table.register("web", "127.0.0.1:5001")
    table.register("web", "127.0.0.1:5001")
    assert table.version == start + 1
    assert table.snapshot()["pools"] == {"web": [{"address": "127.0.0.1:5001",
                                                  "state": "active"}]}


def test_drain_then_expire_after_delay():
    table = TargetTable(["web"])
    table.register("web", "a:1")
    table.register("web", "b:2")
    assert table.drain("web", "a:1", now=100.0, delay=30.0)
    assert table.state_of("web", "a:1") == "draining"
    assert not table.drain("web", "a:1", now=101.0, delay=30.0)  # already draining
    assert table.expire_drained(now=129.9) == []
    version = table.version
    assert table.expire_drained(now=130.0) == [("web", "a:1")]
    assert table.version > version
    assert table.addresses("web") == ["b:2"]


def test_unknown_target_cannot_drain_or_be_removed():
    table = TargetTable(["web"])
    assert not table.drain("web", "x:1", now=0, delay=1)
    assert not table.remove("web", "x:1")
    assert not table.drain("nope", "x:1", now=0, delay=1)
