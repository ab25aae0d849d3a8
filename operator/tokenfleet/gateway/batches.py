"""``/v1/files`` and ``/v1/batches`` on the gateway, backed by the object store and
InferenceBatch objects, so the official ``openai`` client's ``files.create`` and
``batches.create/retrieve/list/cancel`` work unchanged.

* A file is stored at ``<files-uri>/<namespace>/files/<file id>`` with its metadata next to it
  (``.json``); the API key's namespace scopes every file and batch.
* ``POST /v1/batches`` reads the input file's first request to find its ``model`` (a job in the
  key's namespace, as for ``/v1/chat/completions``) and creates an InferenceBatch named after
  the batch id: input = the file, output = ``<files-uri>/<namespace>/batches/<id>/``,
  credentials = the Secret named by ``--batch-secret`` in that namespace. The dispatcher does
  the rest; ``GET /v1/batches/{id}`` maps the object's status to OpenAI's Batch object, whose
  ``output_file_id``/``error_file_id`` (``<id>-output``/``<id>-errors``) are readable through
  ``GET /v1/files/{id}/content``.
* ``POST /v1/batches/{id}/cancel`` sets ``spec.cancel``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from tokenfleet import GROUP, VERSION
from tokenfleet.gateway.api import ApiError
from tokenfleet.gateway.keys import ApiKey
from tokenfleet.gateway.table import JobInfo

__all__ = ["BatchEndpoints", "openai_batch"]

MAX_FILE_BYTES = 200 << 20
_PHASES = {
    "Validating": "validating",
    "InProgress": "in_progress",
    "Finalizing": "finalizing",
    "Completed": "completed",
    "Failed": "failed",
    "Expired": "expired",
    "Cancelling": "cancelling",
    "Cancelled": "cancelled",
}
MERGE_PATCH = "application/merge-patch+json"


def _epoch(text: Any) -> int | None:
    if not text:
        return None
    try:
        return int(datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


def openai_batch(obj: dict[str, Any]) -> dict[str, Any]:
    """An InferenceBatch as OpenAI's Batch object."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    annotations = meta.get("annotations") or {}
    name = str(meta.get("name"))
    phase = _PHASES.get(str(status.get("phase") or "Validating"), "validating")
    counts = status.get("requestCounts") or {}
    finished = _epoch(status.get("finishedAt"))
    errors: dict[str, Any] | None = None
    if phase == "failed":
        ready: dict[str, Any] = next(
            (c for c in status.get("conditions") or () if c.get("type") == "Ready"), {}
        )
        errors = {
            "object": "list",
            "data": [{"code": ready.get("reason"), "message": ready.get("message"), "line": None}],
        }
    done = phase in ("completed", "expired", "cancelled")
    return {
        "id": name,
        "object": "batch",
        "endpoint": annotations.get("tokenfleet.io/openai-endpoint", "/v1/chat/completions"),
        "errors": errors,
        "input_file_id": annotations.get("tokenfleet.io/openai-input-file", ""),
        "completion_window": "24h",
        "status": phase,
        "output_file_id": f"{name}-output" if done else None,
        "error_file_id": f"{name}-errors" if done else None,
        "created_at": _epoch(meta.get("creationTimestamp")) or 0,
        "in_progress_at": _epoch(status.get("startedAt")),
        "expires_at": _epoch(status.get("expiresAt")),
        "completed_at": finished if phase == "completed" else None,
        "failed_at": finished if phase == "failed" else None,
        "expired_at": finished if phase == "expired" else None,
        "cancelled_at": finished if phase == "cancelled" else None,
        "request_counts": {
            "total": int(counts.get("total") or 0),
            "completed": int(counts.get("completed") or 0),
            "failed": int(counts.get("failed") or 0),
        },
        "metadata": json.loads(annotations.get("tokenfleet.io/openai-metadata", "null")),
    }


@dataclass
class BatchEndpoints:
    """The handlers; ``register`` adds them to the gateway's application."""

    store_config: Any
    bucket: str
    prefix: str
    secret_name: str
    api_client: Any
    authenticate: Callable[[web.Request], ApiKey]
    resolve: Callable[[ApiKey, str], JobInfo]

    def register(self, app: web.Application) -> None:
        app.router.add_post("/v1/files", self.create_file)
        app.router.add_get("/v1/files", self.list_files)
        app.router.add_get("/v1/files/{id}", self.get_file)
        app.router.add_get("/v1/files/{id}/content", self.file_content)
        app.router.add_post("/v1/batches", self.create_batch)
        app.router.add_get("/v1/batches", self.list_batches)
        app.router.add_get("/v1/batches/{id}", self.get_batch)
        app.router.add_post("/v1/batches/{id}/cancel", self.cancel_batch)

    # ---- helpers --------------------------------------------------------------------------------

    def _key(self, namespace: str, rest: str) -> str:
        return f"{self.prefix}/{namespace}/{rest}" if self.prefix else f"{namespace}/{rest}"

    async def _store(self, op: str, *args: Any) -> Any:
        from tokenfleet.store import ObjectStore

        async with ObjectStore(self.store_config) as store:
            return await getattr(store, op)(*args)

    @staticmethod
    def _error(exc: ApiError) -> web.Response:
        return web.json_response(exc.body(), status=exc.status)

    def _custom(self) -> Any:
        from kubernetes import client as k8s

        return k8s.CustomObjectsApi(self.api_client)

    async def _k8s(self, call: Callable[[], Any]) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return await asyncio.to_thread(call)
        except ApiException as exc:
            if exc.status == 404:
                raise ApiError(404, "no such batch", code="not_found") from exc
            raise ApiError(502, f"Kubernetes API: {exc.reason}", type_="server_error") from exc

    async def _file_meta(self, namespace: str, file_id: str) -> dict[str, Any]:
        from tokenfleet.store import ObjectNotFound

        try:
            data = await self._store(
                "get", self.bucket, self._key(namespace, f"files/{file_id}.json")
            )
        except ObjectNotFound as exc:
            raise ApiError(
                404, f"no such file: {file_id}", param="file_id", code="not_found"
            ) from exc
        meta: dict[str, Any] = json.loads(data)
        return meta

    # ---- files ----------------------------------------------------------------------------------

    async def create_file(self, request: web.Request) -> web.Response:
        try:
            api_key = self.authenticate(request)
            if not request.content_type.startswith("multipart/"):
                raise ApiError(400, "send the file as multipart/form-data", param="file")
            reader = await request.multipart()
            purpose, filename, content = None, "upload.jsonl", b""
            while True:
                part: Any = await reader.next()
                if part is None:
                    break
                if part.name == "purpose":
                    purpose = (await part.text()).strip()
                elif part.name == "file":
                    filename = part.filename or filename
                    content = bytes(await part.read(decode=False))
                    if len(content) > MAX_FILE_BYTES:
                        raise ApiError(400, f"file over {MAX_FILE_BYTES} bytes", param="file")
            if purpose != "batch":
                raise ApiError(400, "purpose: only 'batch' is supported", param="purpose")
            if not content:
                raise ApiError(400, "file: required, a JSONL file", param="file")
        except ApiError as exc:
            return self._error(exc)
        file_id = f"file-{secrets.token_hex(12)}"
        meta = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        ns = api_key.namespace
        await self._store("put", self.bucket, self._key(ns, f"files/{file_id}"), content)
        await self._store(
            "put", self.bucket, self._key(ns, f"files/{file_id}.json"), json.dumps(meta).encode()
        )
        return web.json_response(meta)

    async def list_files(self, request: web.Request) -> web.Response:
        try:
            api_key = self.authenticate(request)
        except ApiError as exc:
            return self._error(exc)
        listed = await self._store("list", self.bucket, self._key(api_key.namespace, "files/"))
        data = []
        for info in listed:
            if info.key.endswith(".json"):
                data.append(json.loads(await self._store("get", self.bucket, info.key)))
        return web.json_response({"object": "list", "data": data, "has_more": False})

    async def get_file(self, request: web.Request) -> web.Response:
        try:
            api_key = self.authenticate(request)
            meta = await self._file_meta(api_key.namespace, request.match_info["id"])
        except ApiError as exc:
            return self._error(exc)
        return web.json_response(meta)

    async def file_content(self, request: web.Request) -> web.Response:
        from tokenfleet.store import ObjectNotFound

        try:
            api_key = self.authenticate(request)
            file_id = request.match_info["id"]
            ns = api_key.namespace
            for suffix, name in (("-output", "output.jsonl"), ("-errors", "errors.jsonl")):
                if file_id.startswith("batch-") and file_id.endswith(suffix):
                    key = self._key(ns, f"batches/{file_id.removesuffix(suffix)}/{name}")
                    break
            else:
                await self._file_meta(ns, file_id)
                key = self._key(ns, f"files/{file_id}")
            try:
                data = await self._store("get", self.bucket, key)
            except ObjectNotFound as exc:
                raise ApiError(404, f"no such file: {file_id}", code="not_found") from exc
        except ApiError as exc:
            return self._error(exc)
        return web.Response(body=data, content_type="application/octet-stream")

    # ---- batches --------------------------------------------------------------------------------

    async def create_batch(self, request: web.Request) -> web.Response:
        try:
            api_key = self.authenticate(request)
            try:
                body = await request.json()
            except ValueError as exc:
                raise ApiError(400, f"body is not JSON: {exc}", code="invalid_json") from exc
            if not isinstance(body, dict):
                raise ApiError(400, "request body must be a JSON object", code="invalid_json")
            file_id = body.get("input_file_id")
            endpoint = body.get("endpoint")
            if not isinstance(file_id, str) or not file_id:
                raise ApiError(400, "input_file_id: required", param="input_file_id")
            if endpoint not in ("/v1/chat/completions", "/v1/completions"):
                raise ApiError(
                    400,
                    "endpoint: /v1/chat/completions or /v1/completions",
                    param="endpoint",
                )
            if body.get("completion_window", "24h") != "24h":
                raise ApiError(400, "completion_window: only '24h'", param="completion_window")
            metadata = body.get("metadata")
            ns = api_key.namespace
            await self._file_meta(ns, file_id)
            content = await self._store("get", self.bucket, self._key(ns, f"files/{file_id}"))
            job = self.resolve(api_key, _first_model(content))
        except ApiError as exc:
            return self._error(exc)
        name = f"batch-{secrets.token_hex(10)}"
        annotations = {
            "tokenfleet.io/openai-endpoint": str(endpoint),
            "tokenfleet.io/openai-input-file": file_id,
            "tokenfleet.io/openai-metadata": json.dumps(metadata),
        }
        base = f"s3://{self.bucket}/"
        obj = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "InferenceBatch",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations},
            "spec": {
                "jobName": job.name,
                "input": {"uri": base + self._key(ns, f"files/{file_id}")},
                "output": {"uri": base + self._key(ns, f"batches/{name}/")},
                "credentialsSecretName": self.secret_name,
                "completionWindowSeconds": 86400,
                "priority": "Background",
            },
        }
        try:
            created = await self._k8s(
                lambda: self._custom().create_namespaced_custom_object(
                    GROUP, VERSION, ns, "inferencebatches", obj
                )
            )
        except ApiError as exc:
            return self._error(exc)
        return web.json_response(openai_batch(created))

    async def get_batch(self, request: web.Request) -> web.Response:
        try:
            api_key = self.authenticate(request)
            name = request.match_info["id"]
            obj = await self._k8s(
                lambda: self._custom().get_namespaced_custom_object(
                    GROUP, VERSION, api_key.namespace, "inferencebatches", name
                )
            )
        except ApiError as exc:
            return self._error(exc)
        return web.json_response(openai_batch(obj))

    async def list_batches(self, request: web.Request) -> web.Response:
        try:
            api_key = self.authenticate(request)
            listed = await self._k8s(
                lambda: self._custom().list_namespaced_custom_object(
                    GROUP, VERSION, api_key.namespace, "inferencebatches"
                )
            )
        except ApiError as exc:
            return self._error(exc)
        data = [openai_batch(o) for o in listed.get("items") or ()]
        data.sort(key=lambda b: (-int(b["created_at"]), b["id"]))
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": False,
            }
        )

    async def cancel_batch(self, request: web.Request) -> web.Response:
        try:
            api_key = self.authenticate(request)
            name = request.match_info["id"]
            obj = await self._k8s(
                lambda: self._custom().patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    api_key.namespace,
                    "inferencebatches",
                    name,
                    {"spec": {"cancel": True}},
                    _content_type=MERGE_PATCH,
                )
            )
        except ApiError as exc:
            return self._error(exc)
        out = openai_batch(obj)
        if out["status"] not in ("completed", "failed", "expired", "cancelled"):
            out["status"] = "cancelling"
        return web.json_response(out)


def _first_model(content: bytes) -> str:
    """The ``body.model`` of the input's first request (the job that serves the batch)."""
    for raw in content.split(b"\n"):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        model = ((line.get("body") or {}) if isinstance(line, dict) else {}).get("model")
        if isinstance(model, str) and model:
            return model
    raise ApiError(
        400, "input_file_id: no request in the file names a model", param="input_file_id"
    )
