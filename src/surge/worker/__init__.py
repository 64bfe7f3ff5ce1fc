"""The workers: consume a queue, run a handler per task name, settle each message.

``consumer`` owns the loop (receive, dispatch, heartbeat, settle, shutdown); the pure rules it
follows live apart (``envelope``, ``backoff``, ``slots``, ``heartbeat``) and policy sits in typed
hooks around it (``hooks``). ``main`` wires a worker group from the settings.
"""
