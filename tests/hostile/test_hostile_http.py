"""The hostile-input corpus (tests/hostile/cases.toml) sent over HTTP to a live `mmagent serve` app:
every case, each the way a client could send it, answered 4xx in OpenAI's error shape.

- file/path cases: the path as an image_url / video_url URL (refused `forbidden_source`: the server
  never reads local paths) and as input_audio data; where the file exists, its bytes as a data URL
  of the kind the case implies (image_url, input_audio or video_url) and, when audio-ish, as an
  upload to /v1/audio/transcriptions;
- data_url / url cases: as the image_url URL (input_audio for expect = "audio");
- block cases via "openai": the block itself as a content part (via "langchain" does not apply).

Every chat request is sent plain and with `stream: true`. Cases with `settings` go to a server built
with them. After every case the server still answers /health, nothing was written under its media
home or left in the temp dir, and no socket connected anywhere but to the test servers."""

from __future__ import annotations

import base64
import json
import mimetypes
import os
import re
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from mmagent.config import load_settings  # noqa: E402
from mmagent.content.sniff import AUDIO_FORMAT_OF, AUDIO_FORMATS  # noqa: E402
from mmagent.server import create_app  # noqa: E402
from tests.test_hostile_inputs import (CASES, CORPUS, all_files, guard_network, scratch,  # noqa: E402,F401
                                       substitute)
from tests.test_server import running, toolbox  # noqa: E402

#: The error code each typed error is answered with (docs/serving.md, "Errors").
CODES = {"ForbiddenSourceError": "forbidden_source", "InvalidDataURLError": "invalid_data_url",
         "CorruptMediaError": "corrupt_media", "UnsupportedMediaError": "unsupported_media",
         "MediaTooLargeError": "media_too_large", "ContentFormatError": "content_format",
         "SourceNotFoundError": "source_not_found"}
#: What refused media bytes may be answered with (the kind a part implies can change which check
#: fires first: a WAV in an image part is "unsupported", a PNG declared as video/mp4 a bad data URL).
MEDIA_CODES = {"invalid_data_url", "corrupt_media", "unsupported_media", "media_too_large"}
KINDS = ("image", "audio", "video")
PART_OF_KIND = {"image": "image_url", "audio": "input_audio", "video": "video_url"}
#: Local files whose bytes a path case may send: regular files, small, not kernel pseudo-files.
PSEUDO_ROOTS = ("/proc", "/sys", "/dev")
TIMEOUT = 30
OCTET_STREAM = "application/octet-stream"
#: Python's built-in table only (the system's /etc/mime.types differs between machines).
MIME_TYPES = mimetypes.MimeTypes()


# -- servers: one per distinct `settings` of the manifest, started on first use ----------------------------


class Servers:
    """Live apps on 127.0.0.1, keyed by the case's settings overrides; all share one media home."""

    def __init__(self, stack: ExitStack, home: Path, cwd: Path):
        self.stack, self.home, self.cwd = stack, home, cwd
        self.urls: dict[str, str] = {}
        self.addresses: set[tuple[str, int]] = set()

    def url(self, overrides: dict[str, Any] | None = None) -> str:
        key = json.dumps(overrides or {}, sort_keys=True)
        if key not in self.urls:
            settings = load_settings(cwd=self.cwd, overrides={**(overrides or {}), "home": str(self.home)})
            assert settings.home_path == self.home
            app = create_app(settings=settings, toolbox=toolbox())
            base = self.stack.enter_context(running(app))
            host, port = base.removeprefix("http://").rsplit(":", 1)
            self.addresses.add((host, int(port)))
            self.urls[key] = base
        return self.urls[key]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    home, cwd = tmp_path_factory.mktemp("http-home"), tmp_path_factory.mktemp("http-cwd")
    with pytest.MonkeyPatch.context() as mp, ExitStack() as stack:
        # no MMAGENT_* from the shell, no user config: the toolboxes' settings are built here too
        for var in list(os.environ):
            if var.startswith("MMAGENT_"):
                mp.delenv(var)
        mp.setenv("MMAGENT_HOME", str(home))
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("http-xdg")))
        found = Servers(stack, home, cwd)
        found.url()  # the default server
        yield found


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=TIMEOUT, trust_env=False) as c:  # trust_env=False: no proxy from the env
        yield c


@pytest.fixture
def no_network(servers, monkeypatch):
    """Like tests/test_hostile_inputs.py: any connect or non-local name lookup fails the test, except
    a connect to exactly one of the test servers (the client shares this process with them)."""
    yield from guard_network(
        monkeypatch, allowed=lambda address: isinstance(address, tuple) and tuple(address[:2]) in servers.addresses)


# -- the requests a case becomes ---------------------------------------------------------------------------


def chat(part: dict) -> dict:
    return {"model": "tools", "messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                                                          part]}]}


def url_part(kind: str, url: str) -> dict:
    key = "video_url" if kind == "video" else "image_url"
    return {"type": key, key: {"url": url}}


def media_part(kind: str, mime: str, data: bytes) -> dict:
    """A part carrying `data` the way a client sends that kind: input_audio for audio, a data URL else."""
    encoded = base64.b64encode(data).decode("ascii")
    if kind == "audio":
        fmt = AUDIO_FORMAT_OF.get(mime, mime.split("/", 1)[1])
        return {"type": "input_audio", "input_audio": {"data": encoded, "format": fmt}}
    return url_part(kind, f"data:{mime};base64,{encoded}")


def implied(case: dict, name: str) -> tuple[str | None, str]:
    """(kind, MIME type) the case implies for a file called `name`: its `expect`, else the kind the
    extension suggests (None when it is no media kind)."""
    ext = Path(name).suffix.lower().lstrip(".")
    guessed = AUDIO_FORMATS.get(ext) or MIME_TYPES.guess_type(name)[0] or OCTET_STREAM
    kind = case.get("expect") or (guessed.split("/")[0] if guessed.split("/")[0] in KINDS else None)
    if kind and not guessed.startswith(kind + "/"):
        guessed = {"image": "image/png", "audio": "audio/wav", "video": "video/mp4"}[kind]
    return kind, guessed


def readable_bytes(path: Path) -> bytes | None:
    """The bytes of a path case's target when it is a small regular file a client could own a copy of."""
    try:
        resolved = path.resolve()
        if resolved.as_posix().startswith(PSEUDO_ROOTS) or not resolved.is_file():
            return None
        if resolved.stat().st_size > 1024 * 1024:
            return None
        return resolved.read_bytes()
    except (OSError, ValueError):
        return None


def requests_for(case: dict) -> list[tuple[str, str, dict, set[str], bool]]:
    """(label, endpoint, httpx kwargs, acceptable codes, whether the case's `match` applies)."""
    out: list[tuple[str, str, dict, set[str], bool]] = []
    own = {CODES[case["error"]]}

    def send(label: str, part: dict, codes: set[str], match: bool = False) -> None:
        out.append((label, "/v1/chat/completions", {"json": chat(part)}, codes, match))
        out.append((label + " (stream)", "/v1/chat/completions", {"json": {**chat(part), "stream": True}}, codes,
                    match))

    if "file" in case or "path" in case:
        given = str(CORPUS / case["file"]) if "file" in case else substitute(case["path"])
        for kind in ("image", "video"):
            send(f"path as {url_part(kind, '')['type']} URL", url_part(kind, given), {"forbidden_source"})
        send("path as input_audio data", {"type": "input_audio", "input_audio": {"data": given, "format": "wav"}},
             MEDIA_CODES)
        target = Path(given) if os.path.isabs(given) or "file" in case else CORPUS / given
        data = readable_bytes(target) if "\0" not in given else None
        if data is not None:
            kind, mime = implied(case, target.name)
            # the library's own check: the same bytes loaded as the same kind (or the case names none)
            exact = "file" in case and case.get("expect") in (None, kind)
            declared = mime != OCTET_STREAM  # a type the name implies may contradict the bytes: invalid_data_url
            send(f"bytes as {mime} in {PART_OF_KIND[kind or 'image']}", media_part(kind or "image", mime, data),
                 MEDIA_CODES if declared or not exact else own, match=exact and not declared)
            if kind == "audio":  # an upload declares nothing the server reads: the bytes decide
                out.append((f"bytes uploaded as {target.name}", "/v1/audio/transcriptions",
                            {"files": {"file": (target.name, data, mime)}, "data": {"model": "whisper-1"}},
                            own if exact else MEDIA_CODES, exact))
            elif declared:  # as a client that does not know the type sends it
                send(f"bytes as {OCTET_STREAM} in {PART_OF_KIND[kind or 'image']}",
                     media_part(kind or "image", OCTET_STREAM, data), own if exact else MEDIA_CODES, match=exact)
    elif "data_url" in case:
        url = case["data_url"]
        if case.get("expect") == "audio":  # input_audio: base64 data and a format, no URL
            header, _, payload = url.removeprefix("data:").partition(",")
            mime, *params = header.split(";")
            data = payload if "base64" in params else base64.b64encode(unquote_to_bytes(payload)).decode()
            fmt = AUDIO_FORMAT_OF.get(mime, mime.partition("/")[2] or "wav")
            send("input_audio", {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}, own,
                 match=True)
        else:
            send("image_url", url_part(case.get("expect") or "image", url), own, match=True)
    elif "url" in case:
        send("image_url", url_part(case.get("expect") or "image", case["url"]), own, match=True)
    elif "block" in case:
        send("content part", case["block"], own, match=True)
    return out


def assert_openai_error(response: httpx.Response, codes: set[str], where: str) -> dict:
    assert 400 <= response.status_code < 500, f"{where}: {response.status_code} {response.text[:500]}"
    assert response.status_code in (400, 413), f"{where}: {response.status_code} {response.text[:500]}"
    assert response.headers["content-type"].startswith("application/json"), where
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, (where, body)
    error = body["error"]
    assert error["type"] == "invalid_request_error", (where, error)
    message = error["message"]
    assert isinstance(message, str) and message, (where, error)
    assert "\n" not in message and "\r" not in message, (where, message)
    assert len(message) <= 500, (where, len(message))
    assert "Traceback" not in message and " object at 0x" not in message, (where, message)
    assert "mmagent-probe-" not in message, (where, message)  # no temporary file names
    expected = codes if response.status_code == 400 else {"request_too_large"}
    assert error["code"] in expected, f"{where}: code {error['code']!r}, expected one of {sorted(expected)}: " \
                                      f"{message}"
    return error


# -- the corpus --------------------------------------------------------------------------------------------


def _id(case: dict) -> str:
    return case["id"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_hostile_input_over_http_is_4xx(case, servers, client, no_network, scratch):
    if "block" in case and case["via"] != "openai":
        pytest.skip("a LangChain content block: not what an HTTP client sends (the server reads OpenAI parts)")
    for need in case.get("needs", []):
        if (Path(need).exists() if need.startswith("/") else shutil.which(need)) in (None, False):
            pytest.skip(f"needs {need}")
    base = servers.url(substitute(case.get("settings", {})))
    requests = requests_for(case)
    assert requests, case["id"]
    assert all_files(servers.home) == [], "the media home was not empty before the case"

    failures = []
    for label, endpoint, kwargs, codes, match in requests:
        where = f"{case['id']}: {label}"
        response = client.post(base + endpoint, **kwargs)
        try:
            error = assert_openai_error(response, codes, where)
            if match and "match" in case:
                assert re.search(case["match"], error["message"]), f"{where}: {error['message']!r}"
        except AssertionError as exc:  # every request is tried; all failures are reported together
            failures.append(str(exc))
        health = client.get(base + "/health")
        assert health.status_code == 200 and health.json()["status"] == "ok", f"{where}: the server is down"
    assert not failures, "\n".join(failures)
    assert all_files(servers.home) == [], "a refused request left files under the media home"
    assert all_files(scratch) == [], "a temporary file was left behind"


def test_every_case_is_replayed_or_skipped_for_a_reason():
    for case in CASES:
        assert requests_for(case) or ("block" in case and case["via"] != "openai"), case["id"]


# -- bodies over the cap -------------------------------------------------------------------------------------


def test_corpus_files_over_the_body_cap_are_413(servers, client, no_network):
    """The corpus's files as data URLs and uploads through a server whose body cap most of them exceed."""
    cap = 2048
    settings = load_settings(cwd=servers.cwd, overrides={"home": str(servers.home)})
    with running(create_app(settings=settings, toolbox=toolbox(), max_body_bytes=cap)) as base:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        servers.addresses.add((host, int(port)))
        over = 0
        for path in all_files(CORPUS):
            data = path.read_bytes()
            kind, mime = implied({}, path.name)
            body = json.dumps(chat(media_part(kind or "image", mime, data))).encode()
            response = client.post(base + "/v1/chat/completions", content=body,
                                   headers={"content-type": "application/json"})
            if len(body) > cap:
                over += 1
                assert response.status_code == 413, (path.name, response.status_code, response.text[:300])
            assert_openai_error(response, MEDIA_CODES, path.name)
            if len(data) > cap:  # (smaller ones may be valid audio: wav_named.png is a real WAV)
                upload = client.post(base + "/v1/audio/transcriptions", files={"file": (path.name, data, mime)})
                assert upload.status_code == 413, (path.name, upload.status_code, upload.text[:300])
                assert_openai_error(upload, set(), path.name)
            assert client.get(base + "/health").json()["status"] == "ok"
        assert over >= 10
    servers.addresses.discard((host, int(port)))
    assert all_files(servers.home) == []
