"""Typed exceptions. Every error mmagent raises on purpose derives from `MMAgentError`.

`InputError` and its subclasses mean the caller's input was rejected (a client error: the CLI
prints one line and exits 2, the server answers 4xx). Everything else is a problem on our side
or in the environment (configuration, plugins, backends).
"""

from __future__ import annotations


class MMAgentError(Exception):
    """Base class of every error mmagent raises deliberately."""

    exit_code = 1


class InputError(MMAgentError, ValueError):
    """The input was rejected; nothing was stored or written."""

    exit_code = 2


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


class BackendNotFoundError(MMAgentError):
    """No backend is registered under the requested role and name."""


class BackendError(MMAgentError):
    """A backend failed to load its model or to run."""
