"""Files written whole or not at all: a process killed or a disk filled while writing leaves the previous file as
it was and no partial one beside it."""

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO


def write_whole(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """`write` into a file beside `path`, synced, then put in its place; a full disk raises OSError (ENOSPC)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
