"""Typed exceptions. Every error mmagent raises on purpose derives from `MMAgentError`.

`InputError` and its subclasses mean the caller's input was rejected (a client error: the CLI
prints one line and exits 2, the server answers 4xx). Everything else is a problem on our side
or in the environment (configuration, plugins, backends).
"""

from __future__ import annotations

import re

#: C0/C1 control characters and Unicode line/paragraph separators: what could break a message
#: over several lines (or forge log lines) when it quotes user input.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str, limit: int | None = None) -> str:
    """`text` with control characters (newlines included) escaped, cut to `limit` characters."""
    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return text


class MMAgentError(Exception):
    """Base class of every error mmagent raises deliberately."""

    exit_code = 1


class InputError(MMAgentError, ValueError):
    """The input was rejected; nothing was stored or written."""

    exit_code = 2

    def __init__(self, message: str = "", *args: object) -> None:
        # Messages quote user input (paths, URLs, MIME types): keep them on one line.
        super().__init__(one_line(message), *args)


class UnsupportedMediaError(InputError):
    """The bytes are not a media type mmagent accepts (or not the expected kind)."""


class MediaTooLargeError(InputError):
    """The input exceeds a configured cap (bytes, pixels or duration)."""


class CorruptMediaError(InputError):
    """The bytes claim a known format but do not decode (truncated, damaged)."""


class InvalidDataURLError(InputError):
    """A `data:` URL is malformed, has bad base64, or declares a MIME type its bytes contradict."""


class ForbiddenSourceError(InputError):
    """The source is not allowed: URL fetching disabled, a blocked scheme or address, a path outside
    the allowed roots."""


class SourceNotFoundError(InputError):
    """A local path does not exist or is not a regular file."""


class FetchError(InputError):
    """Fetching an allowed URL failed (timeout, HTTP error, connection refused)."""


class ConfigError(MMAgentError):
    """The configuration file or an environment override is invalid."""


class PluginError(MMAgentError):
    """A plugin failed to load or to register."""


class BackendError(MMAgentError):
    """A backend failed to load its model or to run."""


class BackendNotFoundError(BackendError):
    """No backend is registered under the requested role and name."""


class PromptTooLongError(InputError):
    """The prompt is longer than `[limits] max_prompt_chars`, or than the model's context allows."""
