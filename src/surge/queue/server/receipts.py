"""Receipt handles that cannot be forged, and the key that makes them so.

A handle names one delivery of one message: the message's sequence number and id, and the
receive that handed it out (its receipt token). Those are public enough (a consumer sees
the MessageId, sequence numbers are dense), so a handle built from them alone let anyone
delete or hide a message another consumer holds. Each handle therefore carries an HMAC
(SHA-256, truncated to 128 bits) of the queue's name and those fields, under a key only
the server knows; a forged or altered handle gets ``ReceiptHandleIsInvalid``, as from SQS.

The key is made once per data directory (``queue-receipts.key``, 32 random bytes in hex,
mode 0600) and kept, so handles stay valid across restarts, as SQS's do for the visibility
timeout. Handles are URL-safe base64 of a version byte, the fields and the tag: opaque,
60 characters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
from pathlib import Path

from surge.errors import QueueError, SurgeError
from surge.private_files import ensure_private_file

KEY_FILE_NAME = "queue-receipts.key"
_KEY_BYTES = 32
_TAG_BYTES = 16
_VERSION = 1
_FIELDS = struct.Struct(">BQI16s")  # version, sequence number, receipt token, message id
_HANDLE_BYTES = _FIELDS.size + _TAG_BYTES


class ReceiptKeyError(SurgeError):
    """The receipt key file cannot be created or read, or other users may read it."""


def invalid_handle(handle: str) -> QueueError:
    shown = handle if len(handle) <= 200 else handle[:200] + "…"
    return QueueError("ReceiptHandleIsInvalid",
                      f'The input receipt handle "{shown}" is not a valid receipt handle.')


class ReceiptHandles:
    """Makes and checks the receipt handles of one server."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a receipt key needs at least 16 bytes")
        self._mac = hmac.new(key, digestmod=hashlib.sha256)  # copied per handle: no key setup

    @classmethod
    def ephemeral(cls) -> ReceiptHandles:
        """A key for this process only (tests, in-memory brokers): handles die with it."""
        return cls(secrets.token_bytes(_KEY_BYTES))

    def _tag(self, queue: str, fields: bytes) -> bytes:
        mac = self._mac.copy()
        mac.update(queue.encode("utf-8") + b"\x00" + fields)
        return mac.digest()[:_TAG_BYTES]

    def encode(self, queue: str, seq: int, token: int, message_id: str) -> str:
        # Message ids are UUIDs (surge.ids): their 16 bytes, without uuid.UUID's cost.
        fields = _FIELDS.pack(_VERSION, seq, token, bytes.fromhex(message_id.replace("-", "")))
        return base64.urlsafe_b64encode(fields + self._tag(queue, fields)).decode().rstrip("=")

    def decode(self, queue: str, handle: str) -> tuple[int, int, str]:
        """(sequence number, receipt token, message id) of a handle this server made for
        ``queue``; ``ReceiptHandleIsInvalid`` for anything else."""
        try:
            raw = base64.urlsafe_b64decode(handle.encode("ascii") + b"=" * (-len(handle) % 4))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise invalid_handle(handle) from None
        if len(raw) != _HANDLE_BYTES or raw[0] != _VERSION:
            raise invalid_handle(handle)
        fields, tag = raw[:_FIELDS.size], raw[_FIELDS.size:]
        if not hmac.compare_digest(tag, self._tag(queue, fields)):
            raise invalid_handle(handle)
        _, seq, token, raw_id = _FIELDS.unpack(fields)
        text = raw_id.hex()
        return seq, token, f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def load_or_create_key(data_dir: str | Path) -> bytes:
    """The data directory's receipt key, made (mode 0600) at the first start."""
    path = Path(data_dir) / KEY_FILE_NAME
    text = ensure_private_file(path, lambda: secrets.token_hex(_KEY_BYTES), "receipt key",
                               ReceiptKeyError)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise ReceiptKeyError(f"the receipt key {path} is not {_KEY_BYTES * 2} hex digits; "
                              "remove it to make a new one (handles given out so far become "
                              "invalid)")
    return key
