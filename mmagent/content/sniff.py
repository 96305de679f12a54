"""Media type detection from the bytes (never from a file name or a declared MIME type)."""

from __future__ import annotations

from .parts import Kind

#: MIME types mmagent accepts, by kind, normalised (filetype's `audio/x-wav` -> `audio/wav`).
ACCEPTED: dict[str, Kind] = {
    "image/png": "image",
    "image/jpeg": "image",
    "image/gif": "image",
    "image/webp": "image",
    "image/bmp": "image",
    "image/tiff": "image",
    "audio/wav": "audio",
    "audio/flac": "audio",
    "audio/ogg": "audio",
    "audio/mpeg": "audio",
    "audio/mp4": "audio",
    "audio/aac": "audio",
    "audio/aiff": "audio",
    "video/mp4": "video",
    "video/webm": "video",
    "video/x-matroska": "video",
    "video/quicktime": "video",
    "video/x-msvideo": "video",
    "video/mpeg": "video",
    "video/x-m4v": "video",
}

_ALIASES = {
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "audio/x-flac": "audio/flac",
    "audio/x-aiff": "audio/aiff",
    "audio/mp3": "audio/mpeg",
    "audio/x-m4a": "audio/mp4",
    "image/jpg": "image/jpeg",
    "image/x-ms-bmp": "image/bmp",
}


def normalize_mime(mime: str) -> str:
    mime = mime.split(";", 1)[0].strip().lower()
    return _ALIASES.get(mime, mime)


def sniff(data: bytes) -> str | None:
    """The normalised MIME type the bytes carry, or None when they are no format we know."""
    import filetype

    guess = filetype.guess(data[:8192])
    return normalize_mime(guess.mime) if guess is not None else None


def kind_of(mime: str) -> str:
    return normalize_mime(mime).split("/", 1)[0]


#: OpenAI's `input_audio.format` names, both ways.
AUDIO_FORMATS = {"wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac", "ogg": "audio/ogg",
                 "m4a": "audio/mp4", "aac": "audio/aac", "aiff": "audio/aiff"}
AUDIO_FORMAT_OF = {mime: fmt for fmt, mime in AUDIO_FORMATS.items()}
