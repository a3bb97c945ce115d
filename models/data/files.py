"""Files written whole or not at all: a process killed or a disk filled while writing leaves the previous file as
it was and no partial one beside it."""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def write_whole(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """`write` into a file beside `path`, synced, then put in its place; a full disk raises OSError (ENOSPC)."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")  # a name of its own: two writers never share it
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
