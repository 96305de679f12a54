"""Hostile inputs: every case in tests/hostile/cases.toml must raise its exact typed error, with a
one-line message, without writing anything to the media store and without touching the network."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

import mmagent.content as content
import mmagent.errors as errors
from mmagent.config import load_settings
from mmagent.content import from_langchain, from_openai, load_media
from mmagent.content.guard import MissingToolError
from mmagent.errors import ForbiddenSourceError, InputError, MMAgentError, SourceNotFoundError

HOSTILE = Path(__file__).resolve().parent / "hostile"
CORPUS = HOSTILE / "corpus"
MANIFEST = HOSTILE / "cases.toml"
CASES: list[dict[str, Any]] = tomllib.loads(MANIFEST.read_text(encoding="utf-8"))["case"]
SOURCE_FORMS = ("file", "path", "data_url", "url", "block")

#: Errors that are not the caller's fault but may still come out of loading media, documented in
#: mmagent.content.guard (a system tool such as ffprobe is missing).
NON_INPUT_ERRORS = (MissingToolError,)


def error_class(name: str) -> type[BaseException]:
    cls = getattr(errors, name, None) or getattr(content, name, None)
    if not (isinstance(cls, type) and issubclass(cls, MMAgentError)):
        raise LookupError(f"{name} is not an error class of mmagent.errors or mmagent.content")
    return cls


def substitute(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("{corpus}", str(CORPUS))
    if isinstance(value, list):
        return [substitute(v) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v) for k, v in value.items()}
    return value


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if not p.is_dir()) if root.exists() else []


def assert_one_line(message: str) -> None:
    assert message, "empty message"
    assert "\n" not in message and "\r" not in message, repr(message)
    assert len(message) < 300, f"{len(message)} chars: {message!r}"
    assert "Traceback" not in message, message
    assert " object at 0x" not in message, message  # no Python reprs
    assert "mmagent-probe-" not in message, message  # no temporary file names


# -- isolation: no network at all, a private scratch temp dir ------------------------------------------


def _is_ip_literal(host: Any) -> bool:
    host = host.decode() if isinstance(host, bytes) else str(host)
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return True
    except ValueError:
        pass
    try:
        socket.inet_aton(host)  # 127.1, 0x7f000001, 2130706433
        return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every hostile URL must be refused before connecting: any connect fails the test, and so does
    any name lookup that could leave the machine (IP literals and 'localhost' resolve locally)."""
    yield from guard_network(monkeypatch)


def guard_network(monkeypatch, allowed=lambda address: False):
    """Patch sockets so that a connect (unless `allowed(address)`) or a non-local name lookup is
    recorded and fails; yields the attempts and asserts there were none."""
    attempts: list[Any] = []
    real = {"connect": socket.socket.connect, "connect_ex": socket.socket.connect_ex}
    real_getaddrinfo = socket.getaddrinfo

    def guarded(name):
        def connect(self, address, *args):
            if allowed(address):
                return real[name](self, address, *args)
            attempts.append(address)
            raise AssertionError(f"a hostile-input test tried to connect to {address!r}")
        return connect

    def getaddrinfo(host, *args, **kwargs):
        if host != "localhost" and not _is_ip_literal(host):
            attempts.append(host)
            raise AssertionError(f"a hostile-input test tried to resolve {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    for name in real:
        monkeypatch.setattr(socket.socket, name, guarded(name))
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts
    assert not attempts, f"network attempted: {attempts}"


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    """Where tempfile puts things during the test (ffprobe's copy of the input): must end empty."""
    path = tmp_path / "scratch"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def load_case(case: dict[str, Any], settings) -> Any:
    if "file" in case:
        return load_media(str(CORPUS / case["file"]), expect=case.get("expect"), settings=settings)
    if "block" in case:
        convert = {"openai": from_openai, "langchain": from_langchain}[case["via"]]
        return convert(case["block"], settings=settings)
    for form in ("path", "data_url", "url"):
        if form in case:
            return load_media(substitute(case[form]), expect=case.get("expect"), settings=settings)
    raise AssertionError(f"case {case['id']} has no source")


# -- the corpus ----------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_hostile_input_is_rejected(case, home, tmp_path, scratch, monkeypatch):
    for need in case.get("needs", []):  # a tool on PATH, or a path that must exist ("/proc")
        if (Path(need).exists() if need.startswith("/") else shutil.which(need)) in (None, False):
            pytest.skip(f"needs {need}")
    monkeypatch.chdir(CORPUS)  # relative paths in the manifest are relative to the corpus
    settings = load_settings(cwd=tmp_path, overrides=substitute(case.get("settings", {})))
    assert settings.home_path == home
    expected = error_class(case["error"])

    with pytest.raises(Exception) as info:
        load_case(case, settings)

    err = info.value
    assert type(err) is expected, f"expected {expected.__name__}, got {type(err).__name__}: {err}"
    assert isinstance(err, InputError) or isinstance(err, NON_INPUT_ERRORS)
    message = str(err)
    assert_one_line(message)
    if "match" in case:
        assert re.search(case["match"], message), message
    assert all_files(home) == [], "something was written under MMAGENT_HOME"
    assert all_files(scratch) == [], "a temporary file was left behind"


def test_manifest_is_complete_and_consistent():
    assert len(CASES) >= 30
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    for case in CASES:
        forms = [f for f in SOURCE_FORMS if f in case]
        assert len(forms) == 1, f"{case['id']}: exactly one source form, got {forms}"
        assert ("via" in case) == ("block" in case), case["id"]
        assert case.get("expect") in (None, "image", "audio", "video"), case["id"]
        assert case.get("why"), f"{case['id']}: say why it is hostile"
        error_class(case["error"])
        load_settings(overrides=substitute(case.get("settings", {})))  # overrides are valid keys
        if "file" in case:
            assert (CORPUS / case["file"]).is_file(), case["file"]


def test_every_corpus_file_is_referenced_and_small():
    referenced = {c["file"] for c in CASES if "file" in c}
    on_disk = {p.relative_to(CORPUS).as_posix() for p in all_files(CORPUS)}
    assert on_disk == referenced, f"unreferenced: {on_disk - referenced}, missing: {referenced - on_disk}"
    sizes = {p.name: p.stat().st_size for p in all_files(CORPUS)}
    assert max(sizes.values()) < 200 * 1024, sizes
    assert sum(sizes.values()) < 1.5 * 1024 * 1024


def test_corpus_is_what_the_generator_makes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_corpus", HOSTILE / "make_corpus.py")
    make_corpus = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_corpus)
    names = make_corpus.build(tmp_path, with_ffmpeg=False)
    committed = {p.name for p in all_files(CORPUS)}
    assert set(names) | {"video_only.mp4"} == committed
    for name in names:
        if name not in make_corpus.TOOL_DEPENDENT:
            assert (tmp_path / name).read_bytes() == (CORPUS / name).read_bytes(), (
                f"{name} differs from what make_corpus.py makes: rerun it"
            )


# -- cases that need a file system set up at runtime -----------------------------------------------------


def _png_bytes() -> bytes:
    return (CORPUS / "small.png").read_bytes()


@pytest.fixture
def jail(tmp_path) -> tuple[Path, Path]:
    """(root, outside): an allowed root, and a directory beside it holding a *valid* PNG, so that
    escaping the root would succeed rather than fail for another reason."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.png").write_bytes(_png_bytes())
    (root / "ok.png").write_bytes(_png_bytes())
    return root, outside


def _rejected(source, settings, home, scratch) -> InputError:
    with pytest.raises(InputError) as info:
        load_media(source, settings=settings)
    assert_one_line(str(info.value))
    assert all_files(home) == [] and all_files(scratch) == []
    return info.value


def test_symlink_inside_root_pointing_outside_is_forbidden(jail, home, tmp_path, scratch):
    root, outside = jail
    (root / "link.png").symlink_to(outside / "secret.png")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    settings = load_settings(cwd=tmp_path, overrides={"paths.allowed_roots": [str(root)]})
    for source in (root / "link.png", str(root / "linkdir" / "secret.png"), f"{root}/../outside/secret.png"):
        assert type(_rejected(source, settings, home, scratch)) is ForbiddenSourceError
    assert load_media(root / "ok.png", settings=settings).width == 32  # the root itself works


def test_outside_the_root_missing_and_existing_files_look_the_same(jail, home, tmp_path, scratch):
    root, outside = jail
    settings = load_settings(cwd=tmp_path, overrides={"paths.allowed_roots": [str(root)]})
    exists = _rejected(str(outside / "secret.png"), settings, home, scratch)
    missing = _rejected(str(outside / "nothing-here.png"), settings, home, scratch)
    assert type(exists) is type(missing) is ForbiddenSourceError


def test_symlink_loop_and_fifo_are_refused_without_hanging(jail, home, tmp_path, scratch):
    root, _ = jail
    (root / "loop-a").symlink_to(root / "loop-b")
    (root / "loop-b").symlink_to(root / "loop-a")
    os.mkfifo(root / "pipe.wav")  # opening a FIFO for reading would block without O_NONBLOCK
    settings = load_settings(cwd=tmp_path, overrides={"paths.allowed_roots": [str(root)]})
    for source in (root / "loop-a", root / "pipe.wav"):
        assert type(_rejected(source, settings, home, scratch)) is SourceNotFoundError


def test_long_path_and_long_url_keep_messages_short(home, tmp_path, scratch):
    settings = load_settings(cwd=tmp_path, overrides={"fetch.enabled": True})
    assert type(_rejected("x" * 5000 + ".png", settings, home, scratch)) is SourceNotFoundError
    assert type(_rejected("/" + "d/" * 3000 + "x.png", settings, home, scratch)) is SourceNotFoundError
    url = "http://127.0.0.1/" + "a" * 5000
    assert type(_rejected(url, settings, home, scratch)) is ForbiddenSourceError


def test_input_error_messages_are_always_one_line():
    err = InputError("bad\r\nthing\u2028here\x00")
    assert str(err) == "bad\\r\\nthing\\u2028here\\x00"
    assert errors.one_line("x" * 50, 10) == "xxxxxxx..."


def test_missing_ffprobe_is_a_documented_non_input_error(home, tmp_path, scratch, monkeypatch):
    import mmagent.content.guard as guard

    monkeypatch.setattr(guard.shutil, "which", lambda name: None)
    settings = load_settings(cwd=tmp_path)
    with pytest.raises(MissingToolError) as info:
        load_media(str(CORPUS / "ftyp_only.mp4"), settings=settings)
    assert not isinstance(info.value, InputError)
    assert_one_line(str(info.value))
    assert all_files(home) == []
