"""The queue: an SQS-compatible server (``server``) and the async client (``client``)."""
