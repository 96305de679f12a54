"""Video as a modality added through the hooks only: keyframes and the audio track, with ffmpeg.

A backend for a new role, `video` (`FfmpegVideo`, no model: the `ffmpeg` and `ffprobe` programs),
and a converter tool, `split_video` (`Tool.expands = ("image", "audio")`). When a request holds a
video and the graph's brain does not take video, the graph kit runs the converter and puts the
keyframes and the audio track in the video's place, so the OCR, captioner, VLM and ASR that read
images and audio see them, and no graph names video. The worked example in docs/plugins.md walks
through this file.

    mmagent run -a clip.mp4 "What is said and what is shown?"
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from mmagent import hookimpl
from mmagent.backends import Backend
from mmagent.content import AudioPart, ImagePart, VideoPart
from mmagent.errors import BackendError, InputError
from mmagent.tools import Tool, ToolOutput

#: Keyframes taken when neither the call nor `[roles.video] options` say how many.
DEFAULT_FRAMES = 4
MAX_FRAMES = 64
#: The audio track is resampled for speech recognition (what Whisper and its kin read).
SAMPLE_RATE = 16000
#: Two keyframes are the same picture when their pixels differ by at most this much on average
#: (0-255): a lossy codec re-codes a still picture a little differently from frame to frame.
SAME_PICTURE = 1.0


class FfmpegVideo(Backend):
    """Splits a video into keyframes (PNG, the video's size) and its audio track (16 kHz mono WAV).

    Options: `frames` (4) keyframes evenly spaced over the duration, consecutive ones showing the
    same picture kept once (a still clip gives one); `timeout` (60) seconds per ffmpeg call;
    `same_picture` (1.0) the mean pixel difference (0-255) under which two frames are the same.
    """

    role = "video"
    name = "ffmpeg"
    description = "Keyframes (PNG) and the audio track (16 kHz WAV) of a video, with ffmpeg"
    accepts = ("video",)
    produces = ("image", "audio")

    def unavailable_reason(self) -> str | None:
        missing = [exe for exe in ("ffmpeg", "ffprobe") if shutil.which(exe) is None]
        if missing:
            return f"video/ffmpeg needs {' and '.join(missing)} (install ffmpeg)"
        return None

    def split(self, video: VideoPart, *, frames: int | None = None) -> tuple[list[ImagePart], AudioPart | None, dict]:
        """(keyframes, audio track or None when the video has no sound, info). `info` holds the
        video's `duration`, `width`, `height`, the `times` of the keyframes kept, how many were
        `sampled`, and `audio` (its duration, or None)."""
        reason = self.unavailable_reason()
        if reason:
            raise BackendError(reason)
        count = _frame_count(frames if frames is not None else self.options.get("frames", DEFAULT_FRAMES))
        timeout = float(self.options.get("timeout", 60))
        source = str(video.path())
        probe = self._probe(source, timeout)
        streams = probe.get("streams", [])
        if not any(s.get("codec_type") == "video" for s in streams):
            raise BackendError("video/ffmpeg: the file has no video stream")
        duration = video.duration or _float(probe.get("format", {}).get("duration"))
        times = [round(i * duration / count, 3) for i in range(count)] if duration else [0.0]
        with tempfile.TemporaryDirectory(prefix="mmagent-video-") as tmp:
            folder = Path(tmp)
            pictures = []
            for i, t in enumerate(times):
                target = folder / f"frame{i:03d}.png"
                self._ffmpeg(["-ss", f"{t:.3f}", "-i", source, "-frames:v", "1", "-f", "image2", "-c:v", "png",
                              str(target)], source, timeout)
                if target.is_file() and target.stat().st_size:  # a seek past the last frame yields none
                    pictures.append((t, target.read_bytes()))
            if not pictures:
                raise BackendError("video/ffmpeg: no frame of the video could be decoded")
            kept = _distinct(pictures, float(self.options.get("same_picture", SAME_PICTURE)))
            audio_bytes, truncated = None, False
            if any(s.get("codec_type") == "audio" for s in streams):
                audio_bytes, truncated = self._audio(source, duration, folder / "audio.wav", timeout)
        return self._parts(video, kept, audio_bytes, {
            "duration": duration, "width": video.width, "height": video.height, "sampled": len(times),
            "times": [t for t, _ in kept], "audio_truncated": truncated})

    # -- ffmpeg --------------------------------------------------------------------------------

    def _probe(self, source: str, timeout: float) -> dict:
        out = _run([shutil.which("ffprobe") or "ffprobe", "-v", "error", "-print_format", "json", "-show_format",
                    "-show_streams", source], source, timeout)
        try:
            return json.loads(out.stdout)
        except ValueError:
            raise BackendError("video/ffmpeg: ffprobe gave unreadable output") from None

    def _ffmpeg(self, args: list[str], source: str, timeout: float) -> None:
        _run([shutil.which("ffmpeg") or "ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], source, timeout)

    def _audio(self, source: str, duration: float | None, target: Path, timeout: float) -> tuple[bytes | None, bool]:
        """The audio track as 16-bit mono WAV at 16 kHz, cut to what mmagent accepts as audio."""
        from mmagent.config import load_settings

        limits = load_settings().limits
        cap = min(limits.max_audio_seconds, (limits.max_bytes - 1024) / (2 * SAMPLE_RATE))
        self._ffmpeg(["-i", source, "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE), "-c:a", "pcm_s16le",
                      "-t", f"{cap:.3f}", "-f", "wav", str(target)], source, timeout)
        data = target.read_bytes() if target.is_file() else b""
        if len(data) <= 44:  # a header and no samples: an empty audio stream
            return None, False
        return data, bool(duration and duration > cap)

    def _parts(self, video: VideoPart, kept: list[tuple[float, bytes]], audio: bytes | None,
               info: dict) -> tuple[list[ImagePart], AudioPart | None, dict]:
        from mmagent.content import load_media

        frames = [load_media(data, expect="image", extras={"video": video.ref.uri, "time": t})
                  for t, data in kept]
        track = load_media(audio, expect="audio", extras={"video": video.ref.uri}) if audio else None
        info["audio"] = round(track.duration, 3) if track is not None else None
        return frames, track, info  # type: ignore[return-value]


def _run(cmd: list[str], source: str, timeout: float) -> subprocess.CompletedProcess:
    """Run one ffmpeg/ffprobe command (no shell); a failure is a BackendError with its last error line."""
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BackendError(f"video/ffmpeg: {Path(cmd[0]).name} took longer than {timeout:g} s") from None
    except OSError as exc:
        raise BackendError(f"video/ffmpeg: cannot run {Path(cmd[0]).name}: {exc.strerror or exc}") from None
    if out.returncode != 0:
        lines = [l.strip() for l in out.stderr.decode(errors="replace").replace(source, "video").splitlines()
                 if l.strip()]
        raise BackendError(f"video/ffmpeg: {lines[-1][:200] if lines else f'{Path(cmd[0]).name} failed'}")
    return out


def _frame_count(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_FRAMES:
        raise InputError(f"video/ffmpeg: frames must be a whole number from 1 to {MAX_FRAMES}, got {value!r}")
    return value


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _distinct(pictures: list[tuple[float, bytes]], threshold: float) -> list[tuple[float, bytes]]:
    """The frames that show a new picture: a frame the same as the one before it is dropped (the
    same bytes, or pixels within `threshold` on average)."""
    import io

    from PIL import Image, ImageChops, ImageStat

    kept: list[tuple[float, bytes]] = []
    previous = None
    for t, data in pictures:
        if kept and data == kept[-1][1]:
            continue
        with Image.open(io.BytesIO(data)) as im:
            pixels = im.convert("RGB")
        if previous is not None and previous.size == pixels.size:
            mean = sum(ImageStat.Stat(ImageChops.difference(previous, pixels)).mean) / 3
            if mean <= threshold:
                continue
        kept.append((t, data))
        previous = pixels
    return kept


# -- the converter tool ----------------------------------------------------------------------------


def _split_video(backend: FfmpegVideo, args: dict[str, Any]) -> ToolOutput:
    frames, audio, info = backend.split(args["file"], frames=args.get("frames"))
    times = ", ".join(f"{t:.1f}" for t in info["times"])
    text = f"{len(frames)} keyframe{'s' if len(frames) != 1 else ''} at {times} s"
    if len(frames) == 1 and info["sampled"] > 1:
        text += " (the picture does not change)"
    if audio is not None:
        text += f"; audio track {audio.duration:.1f} s" + (" (cut to the audio limit)" if info["audio_truncated"] else "")
    else:
        text += "; no audio track"
    artifact = {"duration": info["duration"], "width": info["width"], "height": info["height"],
                "keyframes": [{"time": t, "file": p.ref.uri} for t, p in zip(info["times"], frames)],
                "audio": {"duration": round(audio.duration, 3), "file": audio.ref.uri} if audio is not None else None}
    return ToolOutput(text, parts=(*frames, *([audio] if audio is not None else [])), artifact=artifact, raw=info)


SPLIT_VIDEO = Tool(
    "split_video", "Split a video into keyframes (images) and its audio track, for the image and audio tools.",
    {"type": "object", "properties": {
        "file": {"type": "string", "description": "The video file: a path, a data URL or an mmagent-media: reference."},
        "frames": {"type": "integer", "minimum": 1, "maximum": MAX_FRAMES,
                   "description": f"How many keyframes to take, evenly spaced (default {DEFAULT_FRAMES})"}},
     "required": ["file"]},
    "video", _split_video, artifact="video", file_kind="video", expands=("image", "audio"),
    label="keyframes and audio track of {file}")


@hookimpl
def register_backends(register):
    register(FfmpegVideo)


@hookimpl
def register_tools(register):
    register(SPLIT_VIDEO)
