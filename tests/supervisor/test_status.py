"""``surge status``: rates between two reads and the rendered tables (no admin server)."""

import io

from rich.console import Console

from surge.supervisor.status import compute_rates, render


def state(at, visible, restarts):
    return {
        "time": at,
        "processes": [{"name": "web-1", "kind": "pool", "pid": 42, "state": "running",
                       "healthy": True, "restarts": restarts, "uptime": 12.0}],
        "pools": {"web": {"desired": 1, "min": 1, "max": 4,
                          "targets": [{"address": "127.0.0.1:5001", "state": "active",
                                       "instance": "web-1", "healthy": True}]}},
        "queues": {"images": {"ApproximateNumberOfMessages": visible,
                              "ApproximateNumberOfMessagesNotVisible": 2},
                   "images-dlq": {"error": "the queue did not answer in time"}},
        "workers": {"images": {"queue": "images", "running": 1, "desired": 1,
                               "concurrency": 8}},
    }


def test_rates_between_two_reads():
    rates = compute_rates(state(100.0, 10, 0), state(102.0, 30, 1))
    assert rates["queues"]["images"]["ApproximateNumberOfMessages"] == 10.0
    assert rates["queues"]["images"]["ApproximateNumberOfMessagesNotVisible"] == 0.0
    assert rates["restarts"]["web-1"] == 0.5
    assert compute_rates(None, state(1, 1, 0)) == {"queues": {}, "restarts": {}}


def test_render_shows_every_section():
    output = io.StringIO()
    console = Console(file=output, width=160, color_system=None)
    console.print(render(state(102.0, 30, 1), compute_rates(state(100.0, 10, 0),
                                                           state(102.0, 30, 1))))
    text = output.getvalue()
    for expected in ("web-1", "127.0.0.1:5001", "active", "images", "+10.0",
                     "did not answer", "1/1", "(+0.5/s)"):
        assert expected in text
