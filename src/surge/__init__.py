"""surge: a gateway, app pools, a durable SQS-compatible queue, workers and an autoscaler."""

__version__ = "0.1.0"
