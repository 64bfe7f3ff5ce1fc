"""The workers: consume a queue, run a handler per task name, settle each message.

``consumer`` owns the loop (receive, dispatch, heartbeat, settle, shutdown); the pure rules it
follows live apart (``backoff``, ``slots``, ``heartbeat``; the task envelope is
``surge.envelope``, shared with the enqueue route) and policy sits in typed hooks around it
(``hooks``). ``main`` wires a worker group from the settings.
"""
