"""Untrusted files decoded in warm child processes held to CPU-time, address-space and wall-clock limits.

A decoder that loops, balloons or crashes on a hostile file costs that file an ImageError in words; the caller's
process (the app, a worker) never hangs, never grows and never dies with it. Each child is a fresh interpreter
(`python -m models.data.sandbox`, no fork of a process with threads or loaded models) that imports the decoders
once and then serves one file at a time over a pipe: the file's bytes in, the decoded image at analysis size out.

What comes back is plain bytes under a small JSON header, checked against the limits before use, never a
pickle: a child that a decoder bug let someone take over still cannot run code in the caller.
"""

import fcntl
import hashlib
import io
import json
import math
import os
import queue
import resource
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from models.data.imaging import ANALYSIS_SIDE, DecodedImage, ImageError, analysis_copy, decode_image

ROOT = Path(__file__).resolve().parents[2]
# A frame: the JSON header's length (4 bytes) and the payload's (8 bytes), big-endian, then both.
FRAME = struct.Struct(">IQ")
PIPE_BYTES = 2**20
MAX_HEADER_BYTES = 2**16
# How often a caller's `check` (a job's cancel) is asked while a child works.
CHECK_EVERY_S = 0.5
# A cold child imports numpy, pydicom and Pillow before it is ready; on a busy machine that takes seconds.
START_TIMEOUT_S = 60.0
# What a DICOM header's texts may hold (as models/data/imaging.py cuts them). A PatientID comes back whole up to
# this: one longer than DICOM's 64 characters is refused by the patient-id rule, in words, never shortened.
TEXT_FIELDS = {"patient_mrn": 1024, "study_date": 16, "modality": 16, "series_description": 256, "note": 512}
FORMATS = {"JPEG", "PNG", "DICOM"}
SUFFIXES = {".jpg", ".png"}


@dataclass(frozen=True)
class Limits:
    """What one file may cost a child: processor time (a profiling timer, RLIMIT_CPU behind it), address space
    (RLIMIT_AS, for the whole child) and wall-clock time."""

    cpu_s: float = 30.0
    memory_mb: int = 1536
    timeout_s: float = 60.0


class _ChildLost(Exception):
    """The child stopped, broke the protocol or ran out of time: why, in words."""


def _widen(fd: int) -> None:
    """Let a pipe hold a whole analysis-size image: each fill of the default 64 KB waits for the other side to be
    scheduled, which on a busy machine costs milliseconds a time."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass  # above /proc/sys/fs/pipe-max-size for this user: the default size works, only slower


def _frame(header: dict[str, Any], payload: bytes | memoryview = b"") -> bytes:
    head = json.dumps(header).encode()
    return FRAME.pack(len(head), len(payload)) + head + bytes(payload)


class _Child:
    """One warm child process and the pipe to it."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "models.data.sandbox", str(limits.cpu_s), str(limits.memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
            close_fds=True,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.to_child, self.from_child = self.process.stdin.fileno(), self.process.stdout.fileno()
        for fd in (self.to_child, self.from_child):
            os.set_blocking(fd, False)
            _widen(fd)
        self.ready = False

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()

    def decode(
        self, data: bytes, filename: str, *, max_bytes: int, max_pixels: int, check: Callable[[], None] | None
    ) -> DecodedImage:
        if not self.ready:
            try:
                self._read(time.monotonic() + START_TIMEOUT_S, check, max_payload=0)
            except _ChildLost as exc:
                raise _ChildLost(f"the decoder did not start ({exc})") from exc
            self.ready = True
        deadline = time.monotonic() + self.limits.timeout_s
        request = _frame({"filename": filename, "max_bytes": max_bytes, "max_pixels": max_pixels}, data)
        self._write(request, deadline, check)
        # The analysis copy's pixels, and the stored file: as large as the upload, or a PNG of every pixel.
        max_payload = ANALYSIS_SIDE * ANALYSIS_SIDE * 3 + max_bytes + 4 * max_pixels + 2**20
        header, payload = self._read(deadline, check, max_payload=max_payload)
        if "error" in header:
            raise ImageError(str(header["error"])[:1000])
        return _decoded_from(header, payload)

    def _wait(self, deadline: float, check: Callable[[], None] | None, selector: selectors.BaseSelector) -> list:
        next_check = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise _ChildLost(f"decoding it took longer than {self.limits.timeout_s:g} s")
            if check is not None and now >= next_check:
                check()
                next_check = now + CHECK_EVERY_S
            events = selector.select(min(deadline, next_check if check else deadline) - now)
            if events:
                return events

    def _write(self, data: bytes, deadline: float, check: Callable[[], None] | None) -> None:
        view, sent = memoryview(data), 0
        with selectors.DefaultSelector() as selector:
            selector.register(self.to_child, selectors.EVENT_WRITE)
            while sent < len(view):
                self._wait(deadline, check, selector)
                try:
                    sent += os.write(self.to_child, view[sent : sent + 2**20])
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError) as exc:
                    raise _ChildLost(self._death()) from exc

    def _read(
        self, deadline: float, check: Callable[[], None] | None, *, max_payload: int
    ) -> tuple[dict[str, Any], bytes]:
        buffer, wanted = bytearray(), None
        with selectors.DefaultSelector() as selector:
            selector.register(self.from_child, selectors.EVENT_READ)
            while wanted is None or len(buffer) < wanted:
                self._wait(deadline, check, selector)
                try:
                    chunk = os.read(self.from_child, 2**20 if wanted is None else min(2**22, wanted - len(buffer)))
                except BlockingIOError:
                    continue
                if not chunk:
                    raise _ChildLost(self._death())
                buffer += chunk
                if wanted is None and len(buffer) >= FRAME.size:
                    head, size = FRAME.unpack_from(buffer)
                    if head > MAX_HEADER_BYTES or size > max_payload:
                        raise _ChildLost("the decoder answered out of protocol")
                    wanted = FRAME.size + head + size
        if len(buffer) != wanted:
            raise _ChildLost("the decoder answered out of protocol")
        head, _ = FRAME.unpack_from(buffer)
        try:
            header = json.loads(bytes(buffer[FRAME.size : FRAME.size + head]))
        except ValueError as exc:
            raise _ChildLost("the decoder answered out of protocol") from exc
        if not isinstance(header, dict):
            raise _ChildLost("the decoder answered out of protocol")
        return header, bytes(buffer[FRAME.size + head :])

    def _death(self) -> str:
        """Why the child stopped, in words, once it has."""
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "the decoder stopped answering"
        if code in (-signal.SIGPROF, -signal.SIGXCPU):
            return f"decoding it used more than {self.limits.cpu_s:g} s of processor time"
        if code < 0:
            name = signal.Signals(-code).name
            return f"the decoder crashed on it ({name}; it may have needed more than {self.limits.memory_mb} MB)"
        return f"the decoder stopped on it (exit status {code})"


def _decoded_from(header: dict[str, Any], payload: bytes) -> DecodedImage:
    """The child's answer as a DecodedImage, every field checked: nothing it says is taken on trust."""
    try:
        height, width, channels = (int(v) for v in header["shape"])
        stored_len = int(header["stored_len"])
        texts = {key: header.get(key) for key in TEXT_FIELDS}
        # A grayscale DICOM's own values (float32, at most analysis size) and its header's window, or neither.
        values_shape = [int(v) for v in header.get("values_shape") or ()]
        values_len = 4 * math.prod(values_shape) if values_shape else 0
        window = header.get("window")
        window = None if window is None else (float(window[0]), float(window[1]))
        fields_ok = (
            0 < height <= ANALYSIS_SIDE
            and 0 < width <= ANALYSIS_SIDE
            and channels == 3
            and (not values_shape or (len(values_shape) == 2 and all(0 < v <= ANALYSIS_SIDE for v in values_shape)))
            and stored_len == len(payload) - height * width * 3 - values_len > 0
            and header["image_format"] in FORMATS
            and header["stored_suffix"] in SUFFIXES
            and all(int(header[k]) > 0 for k in ("width", "height"))
            and all(v is None or (isinstance(v, str) and len(v) <= TEXT_FIELDS[k]) for k, v in texts.items())
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _ChildLost("the decoder answered out of protocol") from exc
    if not fields_ok:
        raise _ChildLost("the decoder answered out of protocol")
    pixels = np.frombuffer(payload, dtype=np.uint8, count=height * width * 3).reshape(height, width, 3).copy()
    values = None
    if values_shape:
        offset = height * width * 3
        values = np.frombuffer(payload[offset : offset + values_len], dtype="<f4").reshape(values_shape).copy()
    stored = payload[height * width * 3 + values_len :]
    return DecodedImage(
        rgb=pixels,
        stored_bytes=stored,
        stored_suffix=header["stored_suffix"],
        sha256=hashlib.sha256(stored).hexdigest(),
        width=int(header["width"]),
        height=int(header["height"]),
        image_format=header["image_format"],
        values=values,
        window=window,
        **texts,
    )


class DecodeSandbox:
    """Up to `processes` warm children shared by the threads of one process; one is started at once, the others
    when callers overlap. A child that broke a limit is killed and replaced by a fresh one."""

    def __init__(self, limits: Limits | None = None, processes: int = 1) -> None:
        self.limits, self.processes = limits or Limits(), max(1, processes)
        self._idle: queue.LifoQueue[_Child] = queue.LifoQueue()
        self._started = 0
        self._closed = False
        self._lock = threading.Condition()
        self._idle.put(self._start())

    def _start(self) -> _Child:
        child = _Child(self.limits)
        self._started += 1
        return child

    def _take(self) -> _Child:
        with self._lock:
            while True:
                try:
                    return self._idle.get_nowait()
                except queue.Empty:
                    if self._started < self.processes:
                        return self._start()
                self._lock.wait()

    def _put_back(self, child: _Child | None) -> None:
        with self._lock:
            if child is not None and self._closed:
                child.kill()
                child = None
            if child is None:
                self._started -= 1
            else:
                self._idle.put(child)
            self._lock.notify()

    def decode(
        self,
        data: bytes,
        filename: str,
        *,
        max_bytes: int,
        max_pixels: int,
        check: Callable[[], None] | None = None,
    ) -> DecodedImage:
        """decode_image's answer at analysis size (models/data/imaging.py analysis_copy), made in a child.

        Raises ImageError with the reason, the limit a file broke included. `check`, where given, is called
        every CHECK_EVERY_S while the child works; whatever it raises (a job's cancel) stops the child and
        reaches the caller.
        """
        child: _Child | None = self._take()
        try:
            assert child is not None
            return child.decode(data, filename, max_bytes=max_bytes, max_pixels=max_pixels, check=check)
        except ImageError:
            raise
        except _ChildLost as exc:
            child.kill()
            child = None
            raise ImageError(f"{filename}: the file was not decoded: {exc}; refused.") from exc
        except BaseException:
            # Stopped mid-file (a cancel, an interrupt): the child's state is unknown, so it goes.
            child.kill()
            child = None
            raise
        finally:
            self._put_back(child)

    def close(self) -> None:
        """Stop the children: the idle ones now, a busy one when its file is done."""
        with self._lock:
            self._closed = True
        while True:
            try:
                self._idle.get_nowait().kill()
            except queue.Empty:
                return


# --- The child's side ------------------------------------------------------------------------------------------


def _read_exact(stream: BinaryIO, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _allow_cpu(seconds: float) -> None:
    """Let the next file use `seconds` of processor time: a profiling timer ends the child when it has, and
    RLIMIT_CPU a second later should anything block that timer's signal. Neither is caught, so the kernel ends the
    process wherever the decoder is, whatever it holds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # RLIMIT_CPU counts the whole life of the process, in whole seconds.
    soft = math.ceil(usage.ru_utime + usage.ru_stime + seconds) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
    signal.setitimer(signal.ITIMER_PROF, seconds)


def _answer(header: dict[str, Any], data: bytes, memory_mb: int) -> bytes:
    filename = str(header.get("filename", "the file"))
    try:
        decoded = analysis_copy(
            decode_image(data, filename, max_bytes=int(header["max_bytes"]), max_pixels=int(header["max_pixels"]))
        )
    except ImageError as exc:
        return _frame({"error": str(exc)})
    except MemoryError:
        return _frame({"error": f"{filename}: decoding it needs more than {memory_mb} MB of memory; refused."})
    except Exception as exc:  # a decoder's own failure, in words rather than a lost child
        return _frame({"error": f"{filename}: the file could not be decoded ({type(exc).__name__}: {exc})."[:1000]})
    rgb = np.ascontiguousarray(decoded.rgb, dtype=np.uint8)
    values = None if decoded.values is None else np.ascontiguousarray(decoded.values, dtype="<f4")
    reply = {
        "shape": list(rgb.shape),
        "stored_len": len(decoded.stored_bytes),
        "stored_suffix": decoded.stored_suffix,
        "width": decoded.width,
        "height": decoded.height,
        "image_format": decoded.image_format,
        **{key: (getattr(decoded, key) or "")[:size] or None for key, size in TEXT_FIELDS.items()},
        "values_shape": None if values is None else list(values.shape),
        "window": None if decoded.window is None else [float(v) for v in decoded.window],
    }
    return _frame(reply, rgb.tobytes() + (b"" if values is None else values.tobytes()) + decoded.stored_bytes)


def _warm() -> None:
    """Load Pillow's codecs before the first file, so that neither its time nor its limits pay for them."""
    from PIL import Image

    for kind in ("PNG", "JPEG"):
        buffer = io.BytesIO()
        Image.new("L", (8, 8)).save(buffer, format=kind)
        decode_image(buffer.getvalue(), f"warm.{kind.lower()}", max_bytes=2**20, max_pixels=64)


def serve(cpu_s: float, memory_mb: int) -> None:
    """The child: limits set, then one file at a time from stdin, each answer to stdout, until stdin closes."""
    warnings.simplefilter("ignore")  # damaged files make pydicom and Pillow warn; the answer says what matters
    _warm()
    channel_in, channel_out = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb")
    # Whatever a library prints goes to stderr, never into the answers.
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    channel_out.write(_frame({"ready": True}))
    channel_out.flush()
    while (head := _read_exact(channel_in, FRAME.size)) is not None:
        header_len, payload_len = FRAME.unpack(head)
        header_bytes = _read_exact(channel_in, header_len)
        data = _read_exact(channel_in, payload_len)
        if header_bytes is None or data is None:
            return
        _allow_cpu(cpu_s)
        answer = _answer(json.loads(header_bytes), data, memory_mb)
        signal.setitimer(signal.ITIMER_PROF, 0)
        channel_out.write(answer)
        channel_out.flush()
        del data


if __name__ == "__main__":
    serve(float(sys.argv[1]), int(sys.argv[2]))
