"""mmagent's built-in backends, each an ordinary plugin module (installed as `mmagent.plugins`).

Every module here is registered by the plugin manager like a third-party plugin (the list is
`mmagent.runtime.BUILTIN_PLUGINS`), so it must stay cheap to import: heavy libraries (torch,
transformers, ...) are imported inside the functions that need them.
"""
