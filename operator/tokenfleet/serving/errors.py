"""Typed errors of the serving layer (Triton runtime client, endpoints, routing)."""

from __future__ import annotations

__all__ = [
    "EndpointError",
    "InferenceFailed",
    "ModelLoadFailed",
    "ModelUnloadFailed",
    "RoutingError",
    "RuntimeUnavailable",
    "ServingError",
    "WaitTimeout",
]


class ServingError(Exception):
    """Base class of every error raised by ``tokenfleet.serving``."""


class RuntimeUnavailable(ServingError):
    """The Triton runtime at ``endpoint`` cannot be reached, refused, reset or timed out.

    Raised for connection errors, call timeouts and HTTP 5xx answers that are not about a
    specific model. The operator should treat the node's runtime as down (retry later,
    consider the replicas on it not ready).
    """

    def __init__(self, endpoint: str, message: str) -> None:
        super().__init__(f"runtime {endpoint} unavailable: {message}")
        self.endpoint = endpoint
        self.message = message


class ModelLoadFailed(ServingError):
    """Triton answered a load request for ``model`` with an error.

    ``message`` is Triton's own error text, e.g.
    ``failed to load 'x', failed to poll from model repository``.
    """

    def __init__(self, endpoint: str, model: str, message: str) -> None:
        super().__init__(f"loading {model!r} on {endpoint} failed: {message}")
        self.endpoint = endpoint
        self.model = model
        self.message = message


class ModelUnloadFailed(ServingError):
    """Triton answered an unload request for ``model`` with an error (text in ``message``)."""

    def __init__(self, endpoint: str, model: str, message: str) -> None:
        super().__init__(f"unloading {model!r} on {endpoint} failed: {message}")
        self.endpoint = endpoint
        self.model = model
        self.message = message


class InferenceFailed(ServingError):
    """An inference request for ``model`` was rejected by Triton (model not ready, bad input...)."""

    def __init__(self, endpoint: str, model: str, message: str) -> None:
        super().__init__(f"inference on {model!r} at {endpoint} failed: {message}")
        self.endpoint = endpoint
        self.model = model
        self.message = message


class WaitTimeout(ServingError):
    """``wait_loaded`` / ``wait_unloaded`` gave up; ``last_state`` is the last state observed."""

    def __init__(
        self, endpoint: str, model: str, wanted: str, last_state: str, timeout: float
    ) -> None:
        super().__init__(
            f"{model!r} on {endpoint} not {wanted} after {timeout:.1f}s (last state {last_state})"
        )
        self.endpoint = endpoint
        self.model = model
        self.wanted = wanted
        self.last_state = last_state
        self.timeout = timeout


class EndpointError(ServingError, ValueError):
    """A runtime endpoint (``HOST:PORT``) is malformed; the message names the offending value."""


class RoutingError(ServingError, ValueError):
    """Routing objects cannot be built from the given input (bad pod IP, too many endpoints...)."""
