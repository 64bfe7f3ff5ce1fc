"""The gateway's HTTP/1.1 server: one asyncio Protocol per connection fed to httptools.

``state`` is a pure rule (tested without sockets; the framing rules are ``httpkit.framing``,
shared with the queue server and the admin API); ``protocol`` is the I/O;
``server`` owns what all connections of a process share (limits, routes, the deadline sweep,
the connection cap, the access log).
"""

from surge.gateway.http.limits import Limits
from surge.gateway.http.server import GatewayServer

__all__ = ["GatewayServer", "Limits"]
