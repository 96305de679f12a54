"""A dataset folder written all at once: into a temporary sibling that replaces the target only
when complete, so an interrupted write leaves no half-written folder, and an existing folder is
replaced only when it is one of ours (`--overwrite` never deletes an unrelated directory)."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError


@contextmanager
def folder_written_whole(out: str | os.PathLike, *, overwrite: bool, ours: Callable[[Path], bool],
                         what: str) -> Iterator[Path]:
    """Yields the temporary folder to fill; on success it becomes `out`. A non-empty `out` is
    refused unless `overwrite`, and even then unless `ours(out)` (it holds a `what`)."""
    target = Path(out).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise InputError(f"{target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise InputError(f"{target} is not empty (use --overwrite / overwrite=True to replace it)")
        if not ours(target):
            raise InputError(f"{target} is not empty and is not {what}; refusing to replace it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"cannot create {target}: a parent is not a directory") from None
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, out: Path) -> None:
    """Put the finished `tmp` at `out`, replacing what is there (an empty dir or an old dataset)."""
    if not out.exists():
        tmp.rename(out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
    out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        old.rename(out)  # put the previous dataset back
        raise
    shutil.rmtree(old, ignore_errors=True)
