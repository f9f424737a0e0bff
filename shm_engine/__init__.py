"""shm-engine: node desirability scores for cluster schedulers, through shared memory.

Public API (everything else is internal and may change):

- `Config`, `load_config`, `render_defaults`: configuration (TOML).
- `NodeState`: published node states.
- `replay`: run the scoring pipeline over a trace on a logical clock.
- Errors: `ShmEngineError`, `ConfigError`, `EngineNotRunning`,
  `EngineAlreadyRunning`, `UntrustedSegment`, `LayoutMismatch`.

Schedulers read scores with `clients.ScoreReader`; nodes send heartbeats with
`clients.HeartbeatClient` or the ``shm-engine agent`` command.
"""

from shm_engine.core.errors import (
    ConfigError,
    EngineAlreadyRunning,
    EngineNotRunning,
    LayoutMismatch,
    ShmEngineError,
    UntrustedSegment,
)
from shm_engine.core.states import NodeState

__version__ = "0.1.0"

__all__ = [
    "Config",
    "load_config",
    "render_defaults",
    "NodeState",
    "replay",
    "ShmEngineError",
    "ConfigError",
    "EngineNotRunning",
    "EngineAlreadyRunning",
    "UntrustedSegment",
    "LayoutMismatch",
    "__version__",
]

_LAZY = {
    "Config": "core.config",
    "load_config": "core.config",
    "render_defaults": "core.config",
    "replay": "tick.replay",
}


def __getattr__(name):
    # Configuration and replay pull in numpy/numba: import them on first use.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'shm_engine' has no attribute {name!r}")
