"""Task handlers: what runs one task. Python callables and external commands (per-task or
persistent), all behind the ``TaskHandler`` Protocol in ``base``; ``registry`` builds them
from a worker group's settings."""
