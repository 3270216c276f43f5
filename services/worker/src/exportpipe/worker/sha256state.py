"""SHA-256 whose running state can be saved in a checkpoint and restored later.

``hashlib`` cannot export a hash's midstate, and a resumed download must still end
with the sha256 of the *whole* file (the job's promise, the manifest's record) although
the next attempt never reads the bytes before its resume offset. This module drives
OpenSSL's ``SHA256_Init/Update/Final`` (the libcrypto ``hashlib`` itself uses) through
``ctypes``, whose calls release the GIL like ``hashlib``'s, and saves the
``SHA256_CTX`` as portable fields (the eight chaining words, the message length, the
unprocessed tail of under 64 bytes), so a state saved on one machine restores on
another.

When libcrypto cannot be loaded, :func:`available` is False: callers then do not offer
a ranged resume (they fall back to re-reading the source, which needs no saved state).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

__all__ = ["HashState", "ResumableSha256", "available"]

HashState = dict[str, Any]


class _Ctx(ctypes.Structure):
    # openssl/sha.h: SHA256_CTX (public, unchanged since OpenSSL 0.9.8).
    _fields_ = (
        ("h", ctypes.c_uint32 * 8),
        ("Nl", ctypes.c_uint32),
        ("Nh", ctypes.c_uint32),
        ("data", ctypes.c_uint8 * 64),
        ("num", ctypes.c_uint32),
        ("md_len", ctypes.c_uint32),
    )


@functools.cache
def _lib() -> Any:
    name = ctypes.util.find_library("crypto")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        for fn in ("SHA256_Init", "SHA256_Update", "SHA256_Final"):
            getattr(lib, fn)
    except (OSError, AttributeError):
        return None
    lib.SHA256_Init.argtypes = (ctypes.POINTER(_Ctx),)
    lib.SHA256_Update.argtypes = (ctypes.POINTER(_Ctx), ctypes.c_void_p, ctypes.c_size_t)
    lib.SHA256_Final.argtypes = (ctypes.c_char_p, ctypes.POINTER(_Ctx))
    return lib


def available() -> bool:
    """True when a resumable SHA-256 can be made on this machine."""
    return _lib() is not None


class ResumableSha256:
    """A ``hashlib.sha256``-like object with :meth:`state` and :meth:`restore`."""

    def __init__(self, state: HashState | None = None) -> None:
        lib = _lib()
        if lib is None:
            raise RuntimeError("libcrypto is not available for a resumable sha256")
        self._lib = lib
        self._ctx = _Ctx()
        lib.SHA256_Init(ctypes.byref(self._ctx))
        if state is not None:
            self._restore(state)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Hash ``data`` (any bytes-like object; a bytearray is not copied)."""
        if isinstance(data, bytes):
            buf: Any = data
            size = len(data)
        else:
            view = memoryview(data).cast("B")
            size = view.nbytes
            # A writable buffer is passed in place; a read-only view must be copied.
            buf = bytes(view) if view.readonly else (ctypes.c_char * size).from_buffer(view)
        if not size:
            return
        self._lib.SHA256_Update(ctypes.byref(self._ctx), buf, size)

    def copy(self) -> ResumableSha256:
        """An independent copy of the running hash."""
        other = ResumableSha256.__new__(ResumableSha256)
        other._lib = self._lib
        other._ctx = _Ctx()
        ctypes.pointer(other._ctx)[0] = self._ctx
        return other

    def digest(self) -> bytes:
        """The digest of what was hashed so far (the running state is kept)."""
        out = ctypes.create_string_buffer(32)
        self._lib.SHA256_Final(out, ctypes.byref(self.copy()._ctx))
        return out.raw

    def hexdigest(self) -> str:
        """Hex digest of what was hashed so far."""
        return self.digest().hex()

    @property
    def length(self) -> int:
        """Bytes hashed so far."""
        return int(((self._ctx.Nh << 32) | self._ctx.Nl) >> 3)

    def state(self) -> HashState:
        """The running state as JSON-ready fields."""
        ctx = self._ctx
        return {
            "algorithm": "sha256",
            "h": [int(w) for w in ctx.h],
            "length": self.length,
            "tail": bytes(ctx.data[: ctx.num]).hex(),
        }

    def _restore(self, state: HashState) -> None:
        try:
            words = [int(w) for w in state["h"]]
            length = int(state["length"])
            tail = bytes.fromhex(str(state["tail"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a saved sha256 state ({exc})") from None
        if (
            state.get("algorithm") != "sha256"
            or len(words) != 8
            or not all(0 <= w < 1 << 32 for w in words)
            or length < 0
            or len(tail) != length % 64
        ):
            raise ValueError("not a consistent saved sha256 state")
        ctx = self._ctx
        for i, w in enumerate(words):
            ctx.h[i] = w
        bits = length * 8
        ctx.Nl, ctx.Nh = bits & 0xFFFFFFFF, (bits >> 32) & 0xFFFFFFFF
        ctypes.memmove(ctx.data, tail, len(tail))
        ctx.num = len(tail)
