"""An OpenAI-compatible HTTP server for mmagent's pipelines: `mmagent serve`, or

    from mmagent.server import create_app
    app = create_app()            # a FastAPI app; run it with uvicorn

Endpoints: `GET /v1/models`, `POST /v1/chat/completions` (text, image_url, input_audio parts;
`stream: true` as server-sent events), `POST /v1/audio/transcriptions` (the Whisper API shape).
Every media part goes through the content layer (`mmagent.content.load_media`); local paths,
`file://` and media-store references are refused. See docs/serving.md.

Importing this module imports FastAPI (not torch); `mmagent --help` does not import it.
"""

from __future__ import annotations

from .app import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONCURRENCY, create_app

__all__ = ["create_app", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_CONCURRENCY"]
