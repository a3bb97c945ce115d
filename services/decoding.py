"""Files a person hands in (Diagnose uploads, batch folders and zips) decoded in this process's sandbox of warm
child processes (models/data/sandbox.py), under the limits the settings give."""

import os
import threading
from collections.abc import Callable

from models.data.imaging import DecodedImage
from models.data.sandbox import DecodeSandbox, Limits
from settings import get_settings

_lock = threading.Lock()
_current: tuple[tuple[int, Limits, int], DecodeSandbox] | None = None


def sandbox() -> DecodeSandbox:
    """This process's sandbox, started on first use. A forked process (a worker's pool) starts its own, and one
    whose settings changed is replaced."""
    global _current
    settings = get_settings()
    limits = Limits(
        cpu_s=settings.decode_cpu_s, memory_mb=settings.decode_memory_mb, timeout_s=settings.decode_timeout_s
    )
    key = (os.getpid(), limits, settings.decode_processes)
    with _lock:
        if _current is None or _current[0] != key:
            if _current is not None and _current[0][0] == key[0]:
                _current[1].close()  # a parent's children are not this process's to stop
            _current = key, DecodeSandbox(limits, processes=settings.decode_processes)
        return _current[1]


def decode_untrusted(
    data: bytes, filename: str, *, max_bytes: int, max_pixels: int, check: Callable[[], None] | None = None
) -> DecodedImage:
    """The file decoded at analysis size, or ImageError with the reason (a limit it broke included); `check` is
    called while the child works, and what it raises stops the decode (a batch job's cancel)."""
    return sandbox().decode(data, filename, max_bytes=max_bytes, max_pixels=max_pixels, check=check)
