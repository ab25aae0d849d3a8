"""Real tritonserver processes on 127.0.0.1 for tests and the local fleet.

- :class:`TritonServer` / :class:`TritonFleet` (``launcher``): start, wait ready, stop;
- ``repository``: write token-generator models under any Triton model names;
- ``python -m e2e.runtime serve --count N``: a local fleet until SIGINT/SIGTERM.

Needs ``.venv-triton`` (``make triton-venv``). Standard library only on the caller's side.
"""

from e2e.runtime.launcher import (
    TritonFleet,
    TritonInstall,
    TritonServer,
    TritonStartError,
    allocate_ports,
    default_triton_venv,
    live_group_members,
)
from e2e.runtime.repository import (
    DEFAULT_MODELS,
    EXAMPLE_MODELS,
    TEST_MODELS,
    TokenModelSpec,
    render_config,
    spec_for,
    write_model_repository,
    write_token_model,
)

__all__ = [
    "DEFAULT_MODELS",
    "EXAMPLE_MODELS",
    "TEST_MODELS",
    "TokenModelSpec",
    "TritonFleet",
    "TritonInstall",
    "TritonServer",
    "TritonStartError",
    "allocate_ports",
    "default_triton_venv",
    "live_group_members",
    "render_config",
    "spec_for",
    "write_model_repository",
    "write_token_model",
]
