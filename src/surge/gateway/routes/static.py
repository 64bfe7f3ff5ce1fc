"""The static route: files under a directory, with cache validators and expiry.

Path resolution is pure (``resolve_static_path``): ``..`` segments, encoded traversal
(the server percent-decodes the path before routing) and symlinks that leave the root all
come out as "not found". Conditional requests (If-None-Match, then If-Modified-Since)
get 304. The body goes with sendfile.
"""

from __future__ import annotations

import mimetypes
import os
import stat
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from surge.config.settings import StaticRoute
from surge.gateway.exchange import Headers, Request, ResponseWriter
from surge.gateway.http.responses import http_date
from surge.gateway.routes.replies import send_text


def resolve_static_path(root: str, relative: str, index: str | None) -> str | None:
    """The real path of the file ``relative`` names under ``root`` (already a real path),
    or None when it does not exist or would leave the root."""
    segments = [s for s in relative.split("/") if s not in ("", ".")]
    if any(s == ".." or "\x00" in s or "\\" in s for s in segments):
        return None
    real = os.path.realpath(os.path.join(root, *segments))
    if not _inside(root, real):
        return None
    if os.path.isdir(real):
        if not index:
            return None
        real = os.path.realpath(os.path.join(real, index))
        if not _inside(root, real):
            return None
    return real if os.path.isfile(real) else None


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@dataclass(frozen=True, slots=True)
class FileValidators:
    etag: bytes
    last_modified: bytes
    mtime: int  # whole seconds, as Last-Modified can express

    @classmethod
    def of(cls, info: os.stat_result) -> FileValidators:
        mtime = int(info.st_mtime)
        etag = b'"%x-%x"' % (info.st_mtime_ns, info.st_size)
        return cls(etag, http_date(mtime).encode(), mtime)


def is_not_modified(headers: Headers, validators: FileValidators) -> bool:
    """RFC 9110 13.2.2: If-None-Match decides when present; else If-Modified-Since."""
    if_none_match = _header(headers, b"if-none-match")
    if if_none_match is not None:
        tags = [t.strip().removeprefix(b"W/") for t in if_none_match.split(b",")]
        return b"*" in tags or validators.etag in tags
    if_modified_since = _header(headers, b"if-modified-since")
    if if_modified_since is not None:
        try:
            since = parsedate_to_datetime(if_modified_since.decode("latin-1")).timestamp()
        except (TypeError, ValueError, IndexError):
            return False
        return validators.mtime <= since
    return False


def _header(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def content_type_of(path: str) -> bytes:
    guessed, encoding = mimetypes.guess_type(path)
    if guessed is None or encoding is not None:
        return b"application/octet-stream"
    if guessed.startswith("text/") or guessed in ("application/javascript", "application/json"):
        return f"{guessed}; charset=utf-8".encode()
    return guessed.encode()


class StaticHandler:
    def __init__(self, prefix: str, route: StaticRoute, config_dir: str) -> None:
        self.prefix = prefix
        self.root = os.path.realpath(os.path.join(config_dir, route.root))
        self.index = route.index
        self.expires = route.expires

    async def handle(self, request: Request, response: ResponseWriter) -> None:
        if request.method not in ("GET", "HEAD"):
            await send_text(response, 405, "Method Not Allowed\n", [(b"allow", b"GET, HEAD")])
            return
        relative = request.path[len(self.prefix):]
        path = resolve_static_path(self.root, relative, self.index)
        info = os.stat(path) if path is not None else None
        if path is None or info is None or not stat.S_ISREG(info.st_mode):
            await send_text(response, 404, "Not Found\n")
            return
        validators = FileValidators.of(info)
        headers: Headers = [(b"etag", validators.etag),
                            (b"last-modified", validators.last_modified)]
        if self.expires is not None:
            headers.append((b"expires", http_date(time.time() + self.expires).encode()))
            headers.append((b"cache-control", b"max-age=%d" % int(self.expires)))
        if is_not_modified(request.headers, validators):
            response.start(304, headers)
            await response.end()
            return
        headers.append((b"content-type", content_type_of(path)))
        headers.append((b"content-length", b"%d" % info.st_size))
        response.start(200, headers)
        await response.sendfile(path, 0, info.st_size)
        await response.end()
