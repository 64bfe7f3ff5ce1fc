"""The embedded SQS-compatible queue server.

Modules, from the wire inwards: ``app`` (the HTTP handler), ``wire`` (AWS JSON 1.0 and query
protocol encodings), ``service`` (one method per SQS action, long polling, durability),
``moves`` (message move tasks), ``longpoll`` (parked receivers), ``broker`` (queues and
messages in memory, pure and clock-injected), ``lifecycle`` (one message's state machine),
``rules`` (SQS limits and validation), ``store`` (SQLite WAL with group commit) and ``main``
(``surge queue serve``).
"""
