"""Profiling what surge runs: ``surge profile NAME`` samples a running Python process
(gateway, worker, queue server, a Python app server) with py-spy, and renders the
Devel::NYTProf profiles that Perl pools and command handlers write when their settings say
``profile = "nytprof"``."""

from surge.errors import SurgeError


class ProfileError(SurgeError):
    """``surge profile`` cannot do what was asked; the message says why and what to do."""
