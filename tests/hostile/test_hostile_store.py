"""Hostile file system and media store: read errors and kernel pseudo-files (/proc, /sys), the
check-then-open race of path confinement, stale temp files, damaged stored objects, and a full or
read-only disk under the store. Every case is a typed one-line error; nothing partial is left."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from mmagent.config import load_settings
from mmagent.content import load_media
from mmagent.content.sources import read_path
from mmagent.content.store import DamagedMediaError, MediaStore, MediaStoreError
from mmagent.errors import (
    ConfigError,
    ForbiddenSourceError,
    InputError,
    MMAgentError,
    SourceNotFoundError,
    UnsupportedMediaError,
)


def png(color: tuple[int, int, int], size=(16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if not p.is_dir()) if root.exists() else []


def assert_one_line(message: str) -> None:
    assert message and "\n" not in message and "\r" not in message, repr(message)
    assert len(message) < 300, message
    assert "Traceback" not in message and "Errno" not in message, message


@pytest.fixture
def settings(tmp_path, home):
    return load_settings(cwd=tmp_path)


# -- 3: read errors and kernel pseudo-files ----------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs /proc")
def test_proc_self_mem_is_a_typed_one_line_error(settings, home):
    with pytest.raises(InputError) as info:
        load_media("/proc/self/mem", settings=settings)
    assert type(info.value) is UnsupportedMediaError
    assert_one_line(str(info.value))
    assert "/proc" in str(info.value)
    assert all_files(home) == []


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs /proc")
def test_cli_inspect_proc_self_mem_exits_2_with_one_line(home):
    from click.testing import CliRunner

    from mmagent.cli import build_cli

    result = CliRunner().invoke(build_cli(), ["inspect", "/proc/self/mem"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "internal error" not in lines[0], result.output


@pytest.mark.parametrize("path", ["/proc/kmsg", "/proc/self/environ", "/proc/self/cmdline",
                                  "/sys/kernel/mm/transparent_hugepage/enabled", "/sys/power/state"])
def test_kernel_pseudo_files_are_refused_without_being_read(path, settings, home, monkeypatch):
    if not os.path.lexists(path):
        pytest.skip(f"no {path} here")
    opened: list[str] = []
    real_open = os.open

    def spy_open(p, *args, **kwargs):
        opened.append(os.fsdecode(p))
        return real_open(p, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy_open)
    with pytest.raises(UnsupportedMediaError) as info:
        load_media(path, settings=settings)
    assert_one_line(str(info.value))
    assert "pseudo-file" in str(info.value)
    assert not any("kmsg" in p for p in opened), "/proc/kmsg must never be opened (reading it consumes kernel messages)"
    assert all_files(home) == []


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs /proc")
def test_a_link_into_proc_is_refused_too(tmp_path, settings, home):
    (tmp_path / "innocent.png").symlink_to("/proc/self/mem")
    with pytest.raises(UnsupportedMediaError):
        load_media(tmp_path / "innocent.png", settings=settings)
    r, w = os.pipe()  # /dev/fd/N of a pipe: not a regular file
    try:
        with pytest.raises((SourceNotFoundError, UnsupportedMediaError)):
            load_media(f"/dev/fd/{r}", settings=settings)
    finally:
        os.close(r)
        os.close(w)


def test_an_io_error_while_reading_is_a_typed_one_line_error(tmp_path, settings, home, monkeypatch):
    target = tmp_path / "bad-sector.png"
    target.write_bytes(png((1, 2, 3)))
    inode = target.stat().st_ino
    real_read = os.read

    def failing_read(fd, n):
        if os.fstat(fd).st_ino == inode:
            raise OSError(errno.EIO, "Input/output error")
        return real_read(fd, n)

    monkeypatch.setattr(os, "read", failing_read)
    with pytest.raises(SourceNotFoundError) as info:
        load_media(target, settings=settings)
    assert_one_line(str(info.value))
    assert "Input/output error" in str(info.value) and "bad-sector.png" in str(info.value)
    assert all_files(home) == []


# -- 8: path confinement, opened component by component ---------------------------------------------------

SWAPPER = textwrap.dedent(
    r"""
    import ctypes, os, sys, time
    a, b, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    ea, eb = os.fsencode(a), os.fsencode(b)
    mode = "renameat2"
    if renameat2 is None or renameat2(AT_FDCWD, ea, AT_FDCWD, eb, RENAME_EXCHANGE) != 0:
        mode = "rename"
    print(mode, flush=True)
    swaps, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(200):
            if mode == "renameat2":
                renameat2(AT_FDCWD, ea, AT_FDCWD, eb, RENAME_EXCHANGE)
            else:  # a tight rename loop: a moves aside, b takes its place, and back
                os.rename(a, a + ".aside"); os.rename(b, a); os.rename(a, b); os.rename(a + ".aside", a)
            swaps += 1
    print(swaps, flush=True)
    """
)


def _race(target: Path, swap_a: Path, swap_b: Path, settings, inside: bytes, outside: bytes, seconds: float):
    """Load `target` in a loop while another process swaps `swap_a` and `swap_b`; count outcomes."""
    proc = subprocess.Popen([sys.executable, "-c", SWAPPER, str(swap_a), str(swap_b), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    mode = proc.stdout.readline().strip()
    counts = {"loads": 0, "inside": 0, "escapes": 0, "refused": 0, "store_loads": 0}
    errors: set[str] = set()
    hard_stop = time.monotonic() + seconds + 30
    while proc.poll() is None and time.monotonic() < hard_stop:
        counts["loads"] += 1
        try:
            if counts["loads"] % 50 == 0:  # now and then the whole path, store included
                data = load_media(target, settings=settings).read_bytes(MediaStore(settings.home_path / "media"))
                counts["store_loads"] += 1
            else:
                data = read_path(target, settings)
        except InputError as exc:
            counts["refused"] += 1
            errors.add(type(exc).__name__)
            assert_one_line(str(exc))
            continue
        if data == outside:
            counts["escapes"] += 1
        else:
            assert data == inside
            counts["inside"] += 1
    swaps = int(proc.stdout.readline() or 0)
    proc.wait(timeout=30)
    return {"mode": mode, "swaps": swaps, **counts, "errors": sorted(errors)}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("what", ["directory", "file"])
def test_swapping_in_a_symlink_during_loads_never_escapes_the_root(what, tmp_path, home, capsys):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    outside.mkdir()
    inside_bytes, outside_bytes = png((0, 200, 0)), png((200, 0, 0))
    (root / "d" / "x.png").write_bytes(inside_bytes)
    (outside / "x.png").write_bytes(outside_bytes)
    settings = load_settings(cwd=tmp_path, overrides={"paths.allowed_roots": [str(root)]})
    if what == "directory":  # root/d (a folder) <-> root/swap (a link to the outside folder)
        (root / "swap").symlink_to(outside, target_is_directory=True)
        pair = (root / "d", root / "swap")
    else:  # root/d/x.png (a file) <-> root/d/swap (a link to the outside file)
        (root / "d" / "swap").symlink_to(outside / "x.png")
        pair = (root / "d" / "x.png", root / "d" / "swap")
    result = _race(root / "d" / "x.png", *pair, settings, inside_bytes, outside_bytes, seconds=4.0)
    with capsys.disabled():
        print(f"\n[race {what}] {result}")
    assert result["escapes"] == 0, result
    assert result["swaps"] > 1000 and result["loads"] > 200, result
    assert result["inside"] > 0 and result["refused"] > 0, result  # both sides of the race were seen
    assert set(result["errors"]) <= {"ForbiddenSourceError", "SourceNotFoundError"}, result


def test_links_that_stay_inside_the_root_still_work(tmp_path, home):
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "x.png").write_bytes(png((5, 5, 5)))
    (root / "alias").symlink_to(root / "a")  # absolute, inside
    (root / "a" / "rel.png").symlink_to("b/x.png")  # relative, inside
    (root / "a" / "b" / "up.png").symlink_to("../rel.png")  # via '..' and a second link
    via = tmp_path / "via-root"
    via.symlink_to(root, target_is_directory=True)  # a path that reaches the root through a link
    settings = load_settings(cwd=tmp_path, overrides={"paths.allowed_roots": [str(root)]})
    for source in (root / "alias" / "b" / "x.png", root / "a" / "rel.png", root / "a" / "b" / "up.png",
                   via / "a" / "b" / "x.png", f"{root}/a/../a/b/x.png"):
        assert load_media(source, settings=settings).width == 16, source
    (root / "a" / "b" / "out.png").symlink_to("../../../outside.png")
    (tmp_path / "outside.png").write_bytes(png((9, 9, 9)))
    with pytest.raises(ForbiddenSourceError):
        load_media(root / "a" / "b" / "out.png", settings=settings)
    with pytest.raises(SourceNotFoundError):
        load_media(root / "a" / "missing.png", settings=settings)
    with pytest.raises(SourceNotFoundError):
        load_media(root / "a" / "b" / "x.png" / "deeper.png", settings=settings)


def test_an_empty_allowed_root_is_refused_not_the_current_directory(tmp_path, home, monkeypatch):
    import dataclasses

    (tmp_path / "here.png").write_bytes(png((1, 1, 1)))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="allowed_roots"):  # refused by the configuration, or else
        load_media("here.png", settings=load_settings(cwd=tmp_path, overrides={"paths.allowed_roots": [""]}))
    settings = load_settings(cwd=tmp_path)  # settings built by hand are refused when used
    settings = dataclasses.replace(settings, paths=dataclasses.replace(settings.paths, allowed_roots=("",)))
    with pytest.raises(ConfigError, match="allowed_roots"):
        load_media("here.png", settings=settings)
    with pytest.raises(ConfigError, match="allowed_roots"):
        read_path(Path("here.png"), settings)


def test_the_opened_file_is_checked_against_the_size_cap(tmp_path, home):
    root = tmp_path / "root"
    root.mkdir()
    (root / "big.png").write_bytes(png((1, 1, 1)) + b"\0" * 5000)
    settings = load_settings(cwd=tmp_path, overrides={"paths.allowed_roots": [str(root)], "limits.max_bytes": 1000})
    with pytest.raises(InputError, match="byte limit"):
        load_media(root / "big.png", settings=settings)


# -- 9: stale temp files ---------------------------------------------------------------------------------


def _aged(path: Path, seconds: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half-written")
    old = time.time() - seconds
    os.utime(path, (old, old))
    return path


def test_stale_temp_files_are_cleaned_when_the_store_is_opened(tmp_path):
    root = tmp_path / "media"
    stale = [_aged(root / "ab" / ".tmp-killed1", 2 * 3600), _aged(root / "0f" / ".tmp-killed2", 3601)]
    fresh = _aged(root / "ab" / ".tmp-writing-now", 60)  # a concurrent writer's: left alone
    keep = _aged(root / "ab" / ("ab" + "0" * 62), 5 * 3600)  # an old stored object: left alone
    MediaStore(root)
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and keep.exists()


def test_stale_temp_files_are_cleaned_when_the_store_is_written(tmp_path):
    root = tmp_path / "media"
    store = MediaStore(root)
    data = png((3, 4, 5))
    sub = hashlib.sha256(data).hexdigest()[:2]
    stale = _aged(root / sub / ".tmp-killed", 7200)  # appeared after the store was opened
    store.put(data, "image/png")
    assert not stale.exists()
    assert [p.name for p in all_files(root)] == [hashlib.sha256(data).hexdigest()]


# -- 10: damaged stored objects ------------------------------------------------------------------------------


def test_a_truncated_stored_object_is_detected_and_repaired_from_the_source(tmp_path, settings, home):
    data = png((10, 20, 30))
    (tmp_path / "a.png").write_bytes(data)
    part = load_media(tmp_path / "a.png", settings=settings)
    store = MediaStore(home / "media")
    stored = part.path(store)
    stored.write_bytes(b"")  # a crash, a full disk, a careless hand

    with pytest.raises(DamagedMediaError) as info:
        part.read_bytes(store)
    message = str(info.value)
    assert_one_line(message)
    assert "damaged" in message and "again" in message and str(stored) in message
    uri = part.ref.uri
    with pytest.raises(SourceNotFoundError, match="damaged"):
        load_media(uri, settings=settings)

    again = load_media(tmp_path / "a.png", settings=settings)  # the source is at hand: rewritten
    assert again.ref == part.ref
    assert stored.read_bytes() == data
    assert part.read_bytes(store) == data
    assert load_media(uri, settings=settings).ref == part.ref
    assert all_files(home / "media") == [stored]


def test_a_same_size_byte_flip_is_detected_and_repaired(tmp_path, settings, home):
    data = png((40, 50, 60))
    part = load_media(data, settings=settings)
    store = MediaStore(home / "media")
    stored = part.path(store)
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x01
    stored.write_bytes(bytes(flipped))
    with pytest.raises(DamagedMediaError, match="damaged"):
        part.read_bytes(store)
    with pytest.raises(DamagedMediaError, match="damaged"):  # for tools that open the file themselves
        store.verified_path(part.ref)
    load_media(data, settings=settings)
    assert stored.read_bytes() == data
    assert store.verified_path(part.ref) == stored


# -- 11: full disk, read-only home -------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["mkdir", "mkstemp", "write", "replace"])
@pytest.mark.parametrize("code, hint", [(errno.ENOSPC, "free"), (errno.EROFS, "MMAGENT_HOME"),
                                        (errno.EACCES, "MMAGENT_HOME"), (errno.EDQUOT, "free")])
def test_a_full_or_read_only_disk_is_a_typed_error_naming_the_directory(where, code, hint, tmp_path, settings,
                                                                        home, monkeypatch):
    import mmagent.content.store as store_mod

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    if where == "mkdir":
        monkeypatch.setattr(Path, "mkdir", fail)
    elif where == "mkstemp":
        monkeypatch.setattr(store_mod.tempfile, "mkstemp", fail)
    elif where == "write":
        real_fdopen = os.fdopen

        class Full(io.RawIOBase):
            def __init__(self, fd):
                self.fh = real_fdopen(fd, "wb")

            def write(self, b):
                raise OSError(code, os.strerror(code))

            def close(self):
                self.fh.close()

        monkeypatch.setattr(store_mod.os, "fdopen", lambda fd, *a, **k: Full(fd))
    else:
        monkeypatch.setattr(store_mod.os, "replace", fail)

    data = png((70, 80, 90))
    with pytest.raises(MediaStoreError) as info:
        load_media(data, settings=settings)
    err = info.value
    assert isinstance(err, MMAgentError) and not isinstance(err, InputError)
    message = str(err)
    assert_one_line(message)
    assert str(home / "media") in message and hint in message, message
    assert os.strerror(code).lower() in message.lower(), message
    monkeypatch.undo()
    assert [p for p in all_files(home) if p.name.startswith(".tmp-")] == [], "a temp file was left"


def test_a_backend_opening_the_stored_file_never_gets_a_damaged_copy(home, tmp_path):
    """Backends read media through `part.path()` (ffmpeg, ONNX, Whisper): the stored copy is
    verified there too, so a same-size byte flip in the store is an error, not a wrong answer."""
    import pytest as _pytest

    from mmagent.content import load_media

    source = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (16, 16), (10, 200, 30)).save(source)
    part = load_media(source)
    stored = part.path()
    data = bytearray(stored.read_bytes())
    data[-5] ^= 0xFF
    stored.write_bytes(bytes(data))
    with _pytest.raises(Exception, match="damaged|load the original again"):
        part.path()
    assert load_media(source).path().read_bytes() == source.read_bytes()  # the original repairs it
