"""File permissions obeyed by tests that run as root (CI does): ``permissions_enforced``."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

_CAP_V3 = 0x20080522  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set
_DAC = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH (both in the first word)


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _caps(call: str, data) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, call)(ctypes.byref(_Header(_CAP_V3, 0)), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{call}: {os.strerror(err)} (a root test needs Linux capabilities to obey file modes)")


@contextmanager
def permissions_enforced() -> Iterator[None]:
    """Within it, this thread obeys file modes even as root: CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH leave its effective capabilities (capabilities are per thread on Linux)
    and come back on exit. Nothing to do for another user. A root process that cannot drop them
    fails the test rather than skipping it."""
    if os.geteuid() != 0:
        yield
        return
    data = (_Data * 2)()
    _caps("capget", data)
    saved = data[0].effective
    data[0].effective = saved & ~_DAC
    _caps("capset", data)
    try:
        yield
    finally:
        data[0].effective = saved
        _caps("capset", data)
