"""The HTTP API and web dashboard of an engine (``[http]``; the ``http`` extra).

- `server.http_main`: the supervised child that serves them on uvicorn.
- `api.build_app`: the ASGI app over an `EngineView` (tests and
  embedders build one themselves); `api.Endpoint` is a row of its route
  table, from which the OpenAPI document is made.
- `view.EngineView`: the read-only view of the segments behind it.

Layer: like ``shm_engine.ops`` (it reads through ``clients`` and reuses the
exporter of ``ops.metrics``); nothing below imports it.
"""

__all__ = ["EngineView", "build_app", "http_main"]


def __getattr__(name):
    # starlette and uvicorn are loaded only when the HTTP server is used.
    import importlib

    where = {
        "EngineView": "shm_engine.http.view",
        "build_app": "shm_engine.http.api",
        "http_main": "shm_engine.http.server",
    }
    if name in where:
        return getattr(importlib.import_module(where[name]), name)
    raise AttributeError(f"module 'shm_engine.http' has no attribute {name!r}")
