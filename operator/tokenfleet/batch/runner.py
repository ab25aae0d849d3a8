"""One batch, end to end: read and check the input, lease units to replicas, commit outcomes to
the object store, write the output and error files, report status.

Progress lives in the store (:mod:`tokenfleet.batch.layout`): an outcome counts as committed
once the part holding it is written; a dispatcher killed with SIGKILL loses at most the outcomes
not yet flushed (they are served again) and never writes an answered line twice.

Requests go to the runtimes' generate extension (``POST /v2/models/{model}/generate``), as the
gateway sends them, at the replica the core leased the unit to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp

from tokenfleet.api.batch import TERMINAL_PHASES, BatchPhase, BatchPriority, InferenceBatchSpec
from tokenfleet.api.conditions import rfc3339, set_condition, set_kstatus
from tokenfleet.batch.core import (
    DispatchCore,
    DispatchSettings,
    Lease,
    Slot,
    Verdict,
    needed_tokens_per_second,
)
from tokenfleet.batch.layout import Layout, encode_records, merge_records
from tokenfleet.batch.requests import BatchRequest, error_line, output_line, parse_input
from tokenfleet.gateway import api

__all__ = ["BatchRef", "BatchRunner", "RunnerSettings", "Store"]

log = logging.getLogger("tokenfleet.batch")

_GONE_MARKERS = ("unknown model", "not found", "no available versions", "not ready", "unavailable")


class _Listed(Protocol):
    @property
    def key(self) -> str: ...


class _Info(Protocol):
    @property
    def etag(self) -> str: ...

    @property
    def size(self) -> int: ...


class Store(Protocol):
    """What the runner needs of :class:`tokenfleet.store.ObjectStore`."""

    async def get(self, bucket: str, key: str) -> bytes: ...

    async def put(self, bucket: str, key: str, data: bytes) -> str: ...

    async def head(self, bucket: str, key: str) -> _Info | None: ...

    async def list(self, bucket: str, prefix: str = "") -> Sequence[_Listed]: ...


@dataclass(frozen=True)
class BatchRef:
    """One InferenceBatch as last seen."""

    namespace: str
    name: str
    uid: str
    generation: int
    created: datetime
    spec: InferenceBatchSpec
    deleting: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def expires_at(self) -> float:
        return self.created.timestamp() + self.spec.completion_window_seconds


@dataclass(frozen=True)
class RunnerSettings:
    tick_seconds: float = 0.2
    flush_seconds: float = 0.5
    flush_records: int = 64
    status_seconds: float = 1.0
    request_timeout_seconds: float = 120.0
    max_body_bytes: int = 1 << 20
    unit_size: int = 8
    max_window: int = 4
    #: the ETA is judged (deadline at risk) only after this much serving
    eta_warmup_seconds: float = 5.0


class Outcome(Exception):
    """The replica refused a request for good (not retryable): its error line."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Retry(Exception):
    """The replica could not serve now (gone, unreachable): the request is reissued."""


def _run_id() -> str:
    """Names this run's parts: sorts by start time, unique across processes."""
    return f"{int(time.time() * 1000):013d}-{secrets.token_hex(3)}"


@dataclass
class BatchRunner:
    """Drives one batch until a terminal phase. ``current`` returns the latest BatchRef (or
    None once deleted); ``slots`` the job's replicas now; ``patch_status`` writes status."""

    ref: BatchRef
    store: Store
    layout: Layout
    slots: Callable[[float], list[Slot]]
    current: Callable[[], BatchRef | None]
    patch_status: Callable[[dict[str, Any]], Awaitable[None]]
    session: aiohttp.ClientSession
    settings: RunnerSettings = field(default_factory=RunnerSettings)
    clock: Callable[[], float] = time.time
    run_id: str = field(default_factory=_run_id)
    requests: dict[int, BatchRequest] = field(default_factory=dict)
    answered: dict[int, dict[str, Any]] = field(default_factory=dict)
    total: int = 0
    core: DispatchCore | None = None
    buffer: list[dict[str, Any]] = field(default_factory=list)
    tasks: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    seq: int = 0
    started: float = 0.0
    served_tokens: int = 0
    conditions: list[dict[str, Any]] = field(default_factory=list)
    requested_tps: float = 0.0
    """Tokens/s this batch asks of its job (0 unless the deadline is at risk)."""
    _last_flush: float = 0.0
    _last_status: float = 0.0

    # ---- status ---------------------------------------------------------------------------------

    def _counts(self) -> dict[str, int]:
        ok = sum(1 for r in self.answered.values() if r.get("ok"))
        return {"total": self.total, "completed": ok, "failed": len(self.answered) - ok}

    def _figures(self) -> dict[str, Any]:
        tokens_in = sum(int(r.get("tokens_in") or 0) for r in self.answered.values())
        tokens_out = sum(int(r.get("tokens_out") or 0) for r in self.answered.values())
        energy = {"Rack": 0.0, "Vehicle": 0.0}
        for r in self.answered.values():
            if r.get("target") in energy:
                energy[str(r["target"])] += float(r.get("energy_j") or 0.0)
        return {
            "requestCounts": self._counts(),
            "tokens": {"input": tokens_in, "output": tokens_out},
            "energy": {
                "rackKWh": round(energy["Rack"] / 3.6e6, 9),
                "vehicleKWh": round(energy["Vehicle"] / 3.6e6, 9),
            },
            "expiresAt": rfc3339(datetime.fromtimestamp(self.ref.expires_at, UTC)),
        }

    async def _status(
        self,
        phase: BatchPhase,
        *,
        reason: str,
        message: str,
        extra: dict[str, Any] | None = None,
    ) -> None:
        now = datetime.fromtimestamp(self.clock(), UTC)
        terminal = phase in TERMINAL_PHASES
        self.conditions = set_kstatus(
            self.conditions,
            ready=phase is BatchPhase.COMPLETED,
            reason=reason,
            message=message,
            reconciling=not terminal,
            stalled=phase is BatchPhase.FAILED,
            observed_generation=self.current_generation(),
            now=now,
        )
        status: dict[str, Any] = {
            "observedGeneration": self.current_generation(),
            "phase": phase.value,
            "conditions": self.conditions,
            **self._figures(),
            **(extra or {}),
        }
        try:
            await self.patch_status(status)
        except Exception as exc:  # the next tick writes again
            log.warning("%s/%s: status patch failed: %s", *self.ref.key, exc)

    def current_generation(self) -> int:
        ref = self.current()
        return ref.generation if ref is not None else self.ref.generation

    async def _fail(self, reason: str, message: str) -> None:
        final = {
            "phase": BatchPhase.FAILED.value,
            "reason": reason,
            "message": message,
            "counts": self._counts(),
            "finishedAt": rfc3339(datetime.fromtimestamp(self.clock(), UTC)),
        }
        with contextlib.suppress(Exception):
            await self.store.put(
                self.layout.bucket, self.layout.final_key, json.dumps(final).encode()
            )
        await self._status(
            BatchPhase.FAILED,
            reason=reason,
            message=message,
            extra={"finishedAt": final["finishedAt"]},
        )

    # ---- the run --------------------------------------------------------------------------------

    async def run(self) -> BatchPhase:
        from tokenfleet.store import ObjectNotFound, StoreError

        self.started = self.clock()
        try:
            final = json.loads(await self.store.get(self.layout.bucket, self.layout.final_key))
        except StoreError:  # none yet, or the store refuses us: the input check says which
            final = None
        if isinstance(final, dict) and final.get("phase"):
            phase = BatchPhase(str(final["phase"]))
            await self._report_final(phase, final)
            return phase
        await self._status(BatchPhase.VALIDATING, reason="Validating", message="reading input")
        in_bucket, in_key = _split(self.ref.spec.input.uri)
        try:
            info = await self.store.head(in_bucket, in_key)
            if info is None:
                raise ObjectNotFound(f"{self.ref.spec.input.uri}: not found", "NoSuchKey")
            data = await self.store.get(in_bucket, in_key)
        except ObjectNotFound:
            await self._fail(
                "InputNotFound", f"input.uri {self.ref.spec.input.uri}: no such object"
            )
            return BatchPhase.FAILED
        except StoreError as exc:
            await self._fail(
                "InputUnreadable", f"input.uri {self.ref.spec.input.uri}: {exc}"[:1024]
            )
            return BatchPhase.FAILED
        requests, errors, total = parse_input(data, max_body_bytes=self.settings.max_body_bytes)
        self.total = total
        self.requests = {r.index: r for r in requests}
        try:
            manifest = json.loads(
                await self.store.get(self.layout.bucket, self.layout.manifest_key)
            )
        except ObjectNotFound:
            manifest = None
        if manifest is None:
            validation = [
                {
                    "i": e.index,
                    "ok": False,
                    "line": error_line(self.ref.uid, e.index, e.custom_id, e.code, e.message),
                }
                for e in errors
            ]
            if validation:
                await self.store.put(
                    self.layout.bucket,
                    self.layout.part_key("0000000000000-validation", 0),
                    encode_records(validation),
                )
            manifest = {
                "version": 1,
                "input": self.ref.spec.input.uri,
                "etag": info.etag,
                "size": len(data),
                "lines": total,
                "requests": len(requests),
                "created": rfc3339(datetime.fromtimestamp(self.clock(), UTC)),
            }
            await self.store.put(
                self.layout.bucket, self.layout.manifest_key, json.dumps(manifest).encode()
            )
        elif manifest.get("etag") != info.etag or manifest.get("lines") != total:
            await self._fail(
                "InputChanged",
                f"input.uri {self.ref.spec.input.uri} changed after the batch started",
            )
            return BatchPhase.FAILED
        listed = await self.store.list(self.layout.bucket, self.layout.parts_prefix)
        parts = [await self.store.get(self.layout.bucket, o.key) for o in listed]
        self.answered, _ = merge_records(parts)
        self.core = DispatchCore(
            tokens={i: r.expected_tokens for i, r in self.requests.items()},
            answered=set(self.answered),
            settings=DispatchSettings(
                unit_size=self.settings.unit_size,
                max_window=self.settings.max_window,
                yield_to_online=self.ref.spec.priority is BatchPriority.BACKGROUND,
            ),
        )
        log.info(
            "%s/%s: %d lines, %d already answered, %d to serve",
            *self.ref.key,
            total,
            len(self.answered),
            len(self.core.remaining()),
        )
        return await self._loop()

    async def _loop(self) -> BatchPhase:
        assert self.core is not None
        core = self.core
        self._last_flush = self._last_status = self.clock()
        started_at = rfc3339(datetime.fromtimestamp(self.clock(), UTC))
        try:
            while True:
                now = self.clock()
                ref = self.current()
                if ref is None or ref.deleting or ref.spec.cancel:
                    await self._status(
                        BatchPhase.CANCELLING, reason="Cancelling", message="cancel requested"
                    )
                    return await self._stop(
                        BatchPhase.CANCELLED,
                        "batch_cancelled",
                        "the batch was cancelled before this request was served",
                        write_status=ref is not None,
                    )
                if now >= self.ref.expires_at:
                    return await self._stop(
                        BatchPhase.EXPIRED,
                        "batch_expired",
                        "the completion window ended before this request was served",
                    )
                slots = self.slots(now)
                for lease_id in core.revoke(slots, now):
                    task = self.tasks.pop(lease_id, None)
                    if task is not None:
                        task.cancel()
                    log.info(
                        "%s/%s: lease %d revoked, its unanswered requests reissued",
                        *self.ref.key,
                        lease_id,
                    )
                for lease in core.plan(slots, now):
                    self.tasks[lease.id] = asyncio.create_task(self._serve(lease))
                if self.buffer and (
                    now - self._last_flush >= self.settings.flush_seconds
                    or len(self.buffer) >= self.settings.flush_records
                ):
                    await self._flush()
                if core.done() and not self.tasks:
                    await self._flush()
                    return await self._finish(BatchPhase.COMPLETED)
                if now - self._last_status >= self.settings.status_seconds:
                    self._last_status = now
                    await self._progress(now, started_at, slots)
                await asyncio.sleep(self.settings.tick_seconds)
        finally:
            for task in self.tasks.values():
                task.cancel()

    async def _progress(self, now: float, started_at: str, slots: list[Slot]) -> None:
        assert self.core is not None
        elapsed = max(now - self.started, 1e-6)
        rate = self.served_tokens / elapsed
        left = self.core.remaining_tokens()
        eta = self.core.eta_seconds(rate)
        risk = False
        need = 0.0
        if elapsed >= self.settings.eta_warmup_seconds and left > 0:
            risk = eta is None or now + eta > self.ref.expires_at
            if risk:
                need = needed_tokens_per_second(left, now, self.ref.expires_at)
                if not math.isfinite(need):
                    need = 0.0
        self.requested_tps = need
        extra: dict[str, Any] = {
            "startedAt": started_at,
            "reissuedRequests": self.core.reissued,
            "deadlineAtRisk": risk,
            "requestedTokensPerSecond": round(need, 3),
        }
        if eta is not None:
            extra["estimatedCompletionTime"] = rfc3339(datetime.fromtimestamp(now + eta, UTC))
        message = (
            f"{len(self.answered)}/{self.total} answered, {len(self.core.leases)} units on "
            f"{len({s.key for s in slots})} replicas"
        )
        if risk:
            self.conditions = set_condition(
                self.conditions,
                "DeadlineAtRisk",
                True,
                "BehindSchedule",
                f"{left} tokens left; asking job {self.ref.spec.job_name} for "
                f"{need:.1f} more tokens/s (annotation tokenfleet.io/batch-tokens-per-second)",
            )
        else:
            self.conditions = set_condition(
                self.conditions, "DeadlineAtRisk", False, "OnSchedule", ""
            )
        reason = "InProgress" if slots else "NoReadyReplica"
        await self._status(BatchPhase.IN_PROGRESS, reason=reason, message=message, extra=extra)

    # ---- serving one lease ----------------------------------------------------------------------

    async def _serve(self, lease: Lease) -> None:
        assert self.core is not None
        try:
            async with asyncio.TaskGroup() as group:  # one request fails: its siblings stop
                for index in lease.indices:
                    group.create_task(self._one(lease, index))
        except* Retry as retry:
            log.info(
                "%s/%s: lease %d on %s: %s",
                *self.ref.key,
                lease.id,
                lease.slot.node,
                retry.exceptions[0],
            )
        except* Exception:
            log.exception("%s/%s: lease %d failed", *self.ref.key, lease.id)
        finally:
            if self.tasks.get(lease.id) is asyncio.current_task():
                del self.tasks[lease.id]
                self.core.release(lease.id)

    async def _one(self, lease: Lease, index: int) -> None:
        assert self.core is not None
        req = self.requests[index]
        slot = lease.slot
        t0 = self.clock()
        try:
            answer = await self._generate(slot, req)
        except Outcome as refused:
            record = {
                "i": index,
                "ok": False,
                "line": error_line(self.ref.uid, index, req.custom_id, refused.code, str(refused)),
                "node": slot.node,
                "target": slot.target,
            }
            if self.core.accept(lease.id, index) is Verdict.ACCEPTED:
                self._commit(record)
            return
        seconds = max(self.clock() - t0, 1e-6)
        completion = int(answer.get("completion_tokens") or 0)
        prompt = int(answer.get("prompt_tokens") or 0)
        text = str(answer.get("text_output") or "")
        finish = str(answer.get("finish_reason") or "length")
        build = api.chat_response if req.request.kind == "chat" else api.completion_response
        rid = api.new_id(req.request.kind)
        body = build(rid, req.request.model, text, finish, prompt, completion)
        self.core.observe(slot, completion, seconds)
        record = {
            "i": index,
            "ok": True,
            "line": output_line(self.ref.uid, req, body, rid),
            "tokens_in": prompt,
            "tokens_out": completion,
            "target": slot.target,
            "node": slot.node,
            "energy_j": slot.watts * completion / max(slot.tokens_per_second, 1e-9),
            "lease": {
                "id": lease.id,
                "run": self.run_id,
                "issued": lease.issued,
                "expected": lease.expected,
                "leave_by": slot.leave_by,
            },
            "finished": self.clock(),
        }
        if self.core.accept(lease.id, index) is Verdict.ACCEPTED:
            self._commit(record)

    def _commit(self, record: dict[str, Any]) -> None:
        self.buffer.append(record)
        self.answered[int(record["i"])] = record
        self.served_tokens += int(record.get("tokens_out") or 0)

    async def _generate(self, slot: Slot, req: BatchRequest) -> dict[str, Any]:
        url = f"http://{slot.endpoint}/v2/models/{slot.model}/generate"
        payload = {
            "text_input": req.request.prompt,
            "max_tokens": req.request.max_tokens,
            "temperature": req.request.temperature,
            "seed": req.request.seed,
            "stream": False,
        }
        timeout = aiohttp.ClientTimeout(total=self.settings.request_timeout_seconds, connect=3)
        try:
            async with self.session.post(url, json=payload, timeout=timeout) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Retry(f"{slot.endpoint}: {type(exc).__name__}: {exc}") from exc
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        message = ""
        if isinstance(parsed, dict) and "error" in parsed:
            message = str(parsed["error"])
        elif status != 200 or not isinstance(parsed, dict):
            message = text.strip()[:500] or f"HTTP {status}"
        if message:
            if status >= 500 or any(m in message.lower() for m in _GONE_MARKERS):
                raise Retry(f"{slot.endpoint}: {message}")
            raise Outcome("invalid_request", f"rejected by the runtime: {message}")
        assert isinstance(parsed, dict)
        return parsed

    async def _flush(self) -> None:
        """Write the buffered outcomes as one part (retried until it lands: until then they
        are not committed, and a crash serves them again)."""
        if not self.buffer:
            return
        batch, self.buffer = self.buffer, []
        key = self.layout.part_key(self.run_id, self.seq)
        self.seq += 1
        while True:
            try:
                await self.store.put(self.layout.bucket, key, encode_records(batch))
                break
            except Exception as exc:
                log.warning("%s/%s: writing %s failed (%s); retrying", *self.ref.key, key, exc)
                await asyncio.sleep(1.0)
        self._last_flush = self.clock()

    # ---- the end --------------------------------------------------------------------------------

    async def _stop(
        self, phase: BatchPhase, code: str, message: str, *, write_status: bool = True
    ) -> BatchPhase:
        assert self.core is not None
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()
        left = self.core.abandon()
        await self._flush()
        for index in left:
            req = self.requests[index]
            self.buffer.append(
                {
                    "i": index,
                    "ok": False,
                    "line": error_line(self.ref.uid, index, req.custom_id, code, message),
                }
            )
            self.answered[index] = self.buffer[-1]
        await self._flush()
        return await self._finish(phase, write_status=write_status)

    async def _finish(self, phase: BatchPhase, *, write_status: bool = True) -> BatchPhase:
        if write_status:
            await self._status(BatchPhase.FINALIZING, reason="Finalizing", message="writing files")
        listed = await self.store.list(self.layout.bucket, self.layout.parts_prefix)
        merged, repeats = merge_records(
            [await self.store.get(self.layout.bucket, o.key) for o in listed]
        )
        self.answered = merged
        ok = [merged[i]["line"] for i in sorted(merged) if merged[i].get("ok")]
        bad = [merged[i]["line"] for i in sorted(merged) if not merged[i].get("ok")]
        await self.store.put(self.layout.bucket, self.layout.output_key, encode_records(ok))
        await self.store.put(self.layout.bucket, self.layout.errors_key, encode_records(bad))
        final = {
            "phase": phase.value,
            "counts": self._counts(),
            "repeats": repeats,
            "finishedAt": rfc3339(datetime.fromtimestamp(self.clock(), UTC)),
            "reissued": self.core.reissued if self.core else 0,
        }
        await self.store.put(self.layout.bucket, self.layout.final_key, json.dumps(final).encode())
        if write_status:
            await self._report_final(phase, final)
        return phase

    async def _report_final(self, phase: BatchPhase, final: dict[str, Any]) -> None:
        if not self.answered and phase is not BatchPhase.FAILED:
            listed = await self.store.list(self.layout.bucket, self.layout.parts_prefix)
            self.answered, _ = merge_records(
                [await self.store.get(self.layout.bucket, o.key) for o in listed]
            )
        counts = final.get("counts") or {}
        self.total = int(counts.get("total") or self.total)
        reason = str(final.get("reason") or phase.value)
        message = str(final.get("message") or f"{phase.value}: {self._counts()}")
        extra: dict[str, Any] = {"finishedAt": final.get("finishedAt"), "deadlineAtRisk": False}
        if phase is not BatchPhase.FAILED:
            extra["outputUri"] = self.layout.uri(self.layout.output_key)
            extra["errorUri"] = self.layout.uri(self.layout.errors_key)
            extra["reissuedRequests"] = int(final.get("reissued") or 0)
        self.requested_tps = 0.0
        await self._status(phase, reason=reason, message=message, extra=extra)


def _split(uri: str) -> tuple[str, str]:
    rest = uri.removeprefix("s3://")
    bucket, _, key = rest.partition("/")
    return bucket, key
