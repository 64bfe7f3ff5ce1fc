"""Value types shared by every settings model: durations, byte sizes, listen addresses.

Each parses the human form used in ``surge.toml`` ("30s", "5m", "30d"; "8k", "1m";
"0.0.0.0:8080") and rejects anything else with a message that says what is allowed.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel, BeforeValidator, ConfigDict

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
               "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")


def parse_duration(value: Any) -> float:
    """Seconds from ``30``, ``2.5``, ``"30s"``, ``"250ms"``, ``"5m"``, ``"2h"`` or ``"30d"``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '30s', '5m' or '30d', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value!r}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    raise ValueError(
        f"expected a duration like '30s', '250ms', '5m', '2h' or '30d', got {value!r}"
    )


def parse_byte_size(value: Any) -> int:
    """Bytes from ``1024``, ``"8k"``, ``"1m"``, ``"1MiB"`` or ``"2g"``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like '8k' or '1m', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value!r}")
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match and match.group(2).lower() in _SIZE_UNITS:
            return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    raise ValueError(f"expected a size like 1024, '8k', '1m' or '1g', got {value!r}")


class HostPort(NamedTuple):
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_host_port(value: Any) -> HostPort:
    """``"0.0.0.0:8080"``, ``"127.0.0.1:0"`` or ``":8080"`` (all interfaces)."""
    if isinstance(value, HostPort):
        return value
    if isinstance(value, str) and ":" in value:
        host, _, port_text = value.rpartition(":")
        if port_text.isdigit() and 0 <= int(port_text) <= 65535:
            return HostPort(host.strip("[]") or "0.0.0.0", int(port_text))
    raise ValueError(f"expected HOST:PORT like '127.0.0.1:8080' (port 0-65535), got {value!r}")


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach: 127.0.0.0/8, ::1, ``localhost``.
    Any other name may resolve to an address others reach, so it is not loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


Duration = Annotated[float, BeforeValidator(parse_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_byte_size)]
ListenAddress = Annotated[HostPort, BeforeValidator(parse_host_port)]


class StrictModel(BaseModel):
    """Base of every settings model: unknown keys are errors (a typo never passes silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
