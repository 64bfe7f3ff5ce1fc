"""Autoscaling with AWS target-tracking semantics.

``policy`` is the pure decision (clock injected, no I/O); ``activity`` the bounded history
of what was decided; ``cpu``, ``requests`` and ``gauge`` turn process times, access-log
lines and Prometheus text into readings. ``surge up`` runs the policy from
``surge.supervisor.autoscaler``; ``surge simulate`` (``surge.simulate``) replays a load
profile against it.
"""
