"""Decoded uploads and heatmaps kept between redraws: at analysis size, within one byte budget for the process
(IMAGE_CACHE_MB), the least recently used dropped first.

Streamlit's own caches bound entries, not bytes, and copy a value out on every hit; these values are shared,
so their arrays are made read-only.
"""

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import numpy as np
import streamlit as st

from models.data.imaging import DecodedImage, ImageError
from services.decoding import decode_untrusted
from settings import get_settings

T = TypeVar("T")


class ByteBudgetCache:
    """A thread-safe map whose values' sizes add up to at most `budget` bytes, dropping the least recently used
    first; a value larger than the whole budget is returned but not kept."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """The bytes kept now."""
        return self._nbytes

    def values(self) -> list[Any]:
        """What is kept, least recently used first."""
        with self._lock:
            return [value for value, _ in self._entries.values()]

    def get_or_make(self, key: Hashable, make: Callable[[], T], size: Callable[[T], int]) -> T:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key][0]
        # Made outside the lock: a heatmap takes seconds, and other sessions' hits must not wait for it.
        value = make()
        nbytes = size(value)
        with self._lock:
            if key in self._entries:  # another session made it meanwhile
                self._nbytes -= self._entries.pop(key)[1]
            if nbytes <= self.budget:
                self._entries[key] = (value, nbytes)
                self._nbytes += nbytes
            while self._nbytes > self.budget:
                self._nbytes -= self._entries.popitem(last=False)[1][1]
        return value

    def get_many_or_make(
        self, keys: Sequence[Hashable], make: Callable[[list[int]], Sequence[T]], size: Callable[[T], int]
    ) -> list[T]:
        """The value of each key; those not kept are made together, by one call given their positions."""
        found: dict[int, Any] = {}
        with self._lock:
            for i, key in enumerate(keys):
                if key in self._entries:
                    self._entries.move_to_end(key)
                    found[i] = self._entries[key][0]
        missing = [i for i in range(len(keys)) if i not in found]
        if missing:
            for i, value in zip(missing, make(missing), strict=True):
                found[i] = self.get_or_make(keys[i], lambda value=value: value, size)
        return [found[i] for i in range(len(keys))]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._nbytes = 0


@st.cache_resource(show_spinner=False)
def _shared(budget: int) -> ByteBudgetCache:
    return ByteBudgetCache(budget)


def image_cache() -> ByteBudgetCache:
    """The process's cache, shared by every session, sized by IMAGE_CACHE_MB."""
    return _shared(get_settings().image_cache_mb * 2**20)


def read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _decoded_nbytes(decoded: DecodedImage | ImageError) -> int:
    if isinstance(decoded, ImageError):
        return len(str(decoded))
    return decoded.rgb.nbytes + len(decoded.stored_bytes)


def decoded_upload(data: bytes, filename: str, *, max_bytes: int, max_pixels: int) -> DecodedImage:
    """An uploaded file decoded in the sandbox (ImageError with the reason otherwise), its pixels at analysis
    size. A refusal is kept like an image: a file that ran a decoder to its time limit costs that wait once, not
    on every redraw of the page."""

    def make() -> DecodedImage | ImageError:
        try:
            decoded = decode_untrusted(data, filename, max_bytes=max_bytes, max_pixels=max_pixels)
        except ImageError as exc:
            return ImageError(str(exc))  # the words only: a raised one's traceback holds the call's frames
        read_only(decoded.rgb)
        return decoded

    key = ("upload", hashlib.sha256(data).hexdigest(), filename, max_bytes, max_pixels)
    outcome = image_cache().get_or_make(key, make, _decoded_nbytes)
    if isinstance(outcome, ImageError):
        raise ImageError(str(outcome))
    return outcome
