"""mmagent's built-in backends, each an ordinary plugin module (installed as `mmagent.plugins`).

Every module here is registered by the plugin manager like a third-party plugin, so it must stay
cheap to import: heavy libraries (torch, transformers, ...) are imported inside the functions that
need them.
"""

#: Modules registered as built-in plugins, in order.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "mmagent.plugins.whisper",
    "mmagent.plugins.ocr",
    "mmagent.plugins.minilm",
    # Before `vision`: the scene captioner, the only one with offline weights, is the caption default.
    "mmagent.plugins.scene_vlm",
    "mmagent.plugins.vision",
    "mmagent.plugins.transformers_llm",
    "mmagent.plugins.vlm",
    "mmagent.plugins.piper_tts",
    "mmagent.plugins.diffusers_t2i",
    "mmagent.plugins.openai_client",
)
