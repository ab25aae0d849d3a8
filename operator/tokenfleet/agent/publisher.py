"""Writing the annotations: a strategic-merge patch of the agent's own Node's annotations only."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

__all__ = ["STRATEGIC_MERGE", "Patcher", "node_annotation_patcher", "patch_body"]

STRATEGIC_MERGE: Final = "application/strategic-merge-patch+json"

Patcher = Callable[[Mapping[str, str | None]], None]
"""Applies an annotation patch (``None`` values delete the key). Raises on failure."""


def patch_body(annotations: Mapping[str, str | None]) -> dict[str, Any]:
    """The patch document: ``metadata.annotations`` and nothing else."""
    return {"metadata": {"annotations": dict(annotations)}}


def node_annotation_patcher(api: Any, node_name: str, timeout_s: float = 10.0) -> Patcher:
    """A :data:`Patcher` for ``kubernetes.client.CoreV1Api`` ``api`` on Node ``node_name``.

    The content type is forced to strategic-merge (the client would otherwise pick JSON-patch
    for ``nodes``). With the NodeRestriction admission plugin a kubelet-like identity may patch
    only its own Node, which is exactly what this does."""

    def patch(annotations: Mapping[str, str | None]) -> None:
        api.patch_node(
            node_name,
            patch_body(annotations),
            _content_type=STRATEGIC_MERGE,
            _request_timeout=timeout_s,
        )

    return patch
