"""An OpenAI-compatible HTTP server for mmagent's pipelines: `mmagent serve`, or

    from mmagent.server import create_app
    app = create_app()            # a FastAPI app; run it with uvicorn

Endpoints: `GET /v1/models` (pipelines, backend models, OpenAI aliases), `POST /v1/chat/completions`
(text, image_url, input_audio parts; `stream: true` as server-sent events; `tools`;
`response_format` JSON schema), `POST /v1/audio/transcriptions` (the Whisper API shape),
`POST /v1/audio/speech`, `POST /v1/images/generations` (b64_json). Concurrent calls to one backend
are micro-batched (`mmagent.batching`).
Every media part goes through the content layer (`mmagent.content.load_media`); local paths,
`file://` and media-store references are refused. See docs/serving.md.

Importing this module imports FastAPI (not torch); `mmagent --help` does not import it.
"""

from __future__ import annotations

from .app import (DEFAULT_BATCH_WAIT_S, DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONCURRENCY,
                  DEFAULT_TIMEOUT_S, create_app)

__all__ = ["create_app", "DEFAULT_BATCH_WAIT_S", "DEFAULT_MAX_BATCH_SIZE", "DEFAULT_MAX_BODY_BYTES",
           "DEFAULT_MAX_CONCURRENCY", "DEFAULT_TIMEOUT_S"]
