"""The tank poller: poll a tank's Redfish endpoint, say what its status should be and when to write.

The ImmersionPod timer (``immersionpod.py``) ticks every second and the poller polls when
``spec.telemetry.pollIntervalSeconds`` have passed. Each poll computes the status the tank should
have (:func:`~tokenfleet.controllers.tankstatus.desired_status`, pure, one function per
condition) and patches it only when something moved beyond the deadband (:func:`needs_write`),
or to refresh ``lastReadingTime`` with a deadband (:data:`REFRESH_MIN_SECONDS`): freshness is
judged by ``TelemetryFresh`` and the planner from the poller's reading in memory.

Rules:

* bad fields (NaN, out of range, garbage, missing) are dropped one by one: the status field is
  removed (unknown), a Warning Event names the field and the value (once per change of the problem
  set) and ``tokenfleet_telemetry_rejected_total{kind="tank"}`` counts it;
* a failed poll keeps the last reading (``TelemetryFresh`` stays True, the message says the poll
  failed) until it is older than ``staleAfterSeconds``; then ``TelemetryFresh=False``
  (``TelemetryUnreachable``/``TelemetryStale``) and ``Ready=False``. The measured values stay with
  their old ``lastReadingTime`` so consumers judge them by age: the placement takes nothing new
  there and nothing is evicted on a guess;
* a leak (any detector Warning/Critical): ``LeakDetected=True`` and ``Cordoned=True`` (reason
  ``LeakDetected``), ``leakState`` says which; the placement engine applies ``leakPolicy``
  (Drain evicts). Unreadable detectors: ``LeakDetected=Unknown``, ``leakState: Unknown``;
* a leak at or above ``leakPolicy.latchOn`` (default Critical) *latches*: ``status.leakLatch``
  records it (:func:`next_latch`, pure) and the tank stays cordoned (``Cordoned``/``Ready`` reason
  ``LeakLatched``; the snapshot hands the latched state to the placement engine) after the
  detectors read OK again, across operator restarts (it lives in status). A person clears it with
  ``kubectl annotate immersionpod <name> tokenfleet.io/leak-acknowledged=<note>``: the operator
  reads the tank at once and clears the latch only when every detector reads OK
  (:func:`acknowledgement_refusal`); either way it posts an Event (Normal ``LeakLatchCleared`` with
  the note, or Warning ``LeakAcknowledgementRefused`` with why) and removes the annotation, so the
  next leak latches again and a refused acknowledgement must be given again.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp
from pydantic import ValidationError

from tokenfleet.api import parse_immersionpod_spec
from tokenfleet.api.conditions import (
    STALLED,
    set_condition,
    set_kstatus,
)
from tokenfleet.api.models import (
    ImmersionPodSpec,
    RedfishAuthMethod,
    RedfishSpec,
    TelemetrySource,
)
from tokenfleet.controllers.tankstatus import (
    CONDITION_READY,
    CONDITION_TELEMETRY_FRESH,
    MEASURED,
    PollOutcome,
    clear_command,
    desired_status,
    leak_message,
)
from tokenfleet.metrics import (
    TANK_HEADROOM,
    TANK_IT_LOAD,
    TANK_LEAK,
    TANK_LEAK_ACKNOWLEDGEMENTS,
    TANK_LEAK_LATCHED,
    TELEMETRY_AGE,
    TELEMETRY_POLLS,
    TELEMETRY_REJECTED,
    clear_gauge,
)
from tokenfleet.telemetry.immersion import (
    F_LEAK,
    LeakState,
    RedfishClient,
    RedfishCredentials,
    RedfishError,
    SessionTokens,
    ssl_context,
)
from tokenfleet.telemetry.problems import TelemetryProblem
from tokenfleet.telemetry.vehicle import parse_time

log = logging.getLogger(__name__)

# Deadband for status writes.
DEADBAND_C: Final = 0.5
DEADBAND_KW: Final = 0.5
DEADBAND_FLOW_FRACTION: Final = 0.01
DEADBAND_HEADROOM_FRACTION: Final = 0.02
REFRESH_FRACTION: Final = 1 / 3
REFRESH_MIN_SECONDS: Final = 300.0
"""At rest ``lastReadingTime`` is rewritten once older than the larger of this and
``REFRESH_FRACTION`` of ``staleAfterSeconds``: readers act on ``TelemetryFresh`` (computed from
the poller's latest reading, written when it flips), the live age is the metric
``tokenfleet_telemetry_age_seconds{kind="tank"}``, and the planner reads the poller's time from
memory (``Planner.record_tank_reading``). So a quiet tank costs no status write per poll."""

CredentialsLoader = Callable[[str, bool], Awaitable[RedfishCredentials]]
"""(Secret name, session auth?) -> the credentials in it; raises :class:`RedfishError`."""

Warn = Callable[[str, str], None]
"""(reason, message) -> post a Warning Event on the ImmersionPod."""


def acknowledgement_refusal(outcome: PollOutcome) -> str | None:
    """Why a leak acknowledgement must be refused after the poll in ``outcome`` (pure), or
    ``None`` when it is accepted: only a successful reading with every detector OK clears."""
    if outcome.error is not None:
        return f"the tank could not be read: {outcome.error[:500]}"
    reading = outcome.reading
    if reading is None:
        return "the tank has not been read yet"
    if reading.leak_state.is_leak:
        return f"leak detectors still read {reading.leak_state.value} ({leak_message(reading)})"
    if reading.leak_state is not LeakState.OK:
        bad = [d.name for d in reading.leak_detectors if d.state is None]
        return "leak detectors could not be read" + (f": {', '.join(bad)}" if bad else "")
    return None


def _moved(old: Any, new: Any, key: str) -> bool:
    if old is None or new is None:
        return old is not new
    if not isinstance(old, int | float) or not isinstance(new, int | float):
        return bool(old != new)
    if key in ("supplyTempC", "returnTempC"):
        return abs(new - old) >= DEADBAND_C
    if key == "flowLitersPerMinute":
        return abs(new - old) >= max(1.0, abs(old) * DEADBAND_FLOW_FRACTION)
    if key in ("powerHeadroomKW", "thermalHeadroomKW"):
        # derived (thermal headroom swings ~2.5 kW per 0.3 °C of supply): a relative band
        return abs(new - old) >= max(DEADBAND_KW, abs(old) * DEADBAND_HEADROOM_FRACTION)
    return abs(new - old) >= DEADBAND_KW


def _conditions_key(conditions: Any) -> list[tuple[Any, ...]]:
    return sorted(
        (
            c.get("type"),
            c.get("status"),
            c.get("reason"),
            c.get("message"),
            c.get("observedGeneration"),
        )
        for c in conditions or ()
        if isinstance(c, Mapping)
    )


def needs_write(
    current: Mapping[str, Any], desired: Mapping[str, Any], *, now: datetime, stale_after: float
) -> bool:
    """Write when a condition, the leak state, the generation or the node count changed, a
    measured value moved beyond its deadband or appeared/disappeared, or the stored
    ``lastReadingTime`` is older than :data:`REFRESH_MIN_SECONDS` (or a third of
    ``staleAfterSeconds`` when larger) while a newer exists."""
    if _conditions_key(current.get("conditions")) != _conditions_key(desired.get("conditions")):
        return True
    for key in ("observedGeneration", "leakState", "leakLatch", "nodes", "replicas"):
        if key in desired and current.get(key) != desired[key]:
            return True
    for key in MEASURED:
        if _moved(current.get(key), desired.get(key), key):
            return True
    stored, wanted = current.get("lastReadingTime"), desired.get("lastReadingTime")
    if wanted != stored and isinstance(wanted, str):
        stored_time = parse_time(stored) if isinstance(stored, str) else None
        if stored_time is None:
            return True
        refresh = max(stale_after * REFRESH_FRACTION, REFRESH_MIN_SECONDS)
        return (now - stored_time).total_seconds() >= refresh
    return False


def _problem_metric_field(problem: TelemetryProblem) -> str:
    # detector names are unbounded: fold "LeakDetectors/<name>" into "LeakDetectors"
    return F_LEAK if problem.field.startswith(F_LEAK) else problem.field


@dataclass
class TankPoller:
    """Per-ImmersionPod poll state (kept in the object's kopf memo)."""

    name: str
    warn: Warn
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    monotonic: Callable[[], float] = time.monotonic
    session: Callable[[], Awaitable[aiohttp.ClientSession]] | None = None
    outcome: PollOutcome = field(default_factory=PollOutcome)
    next_poll: float = 0.0
    reported_problems: frozenset[TelemetryProblem] = frozenset()
    reported_error: str | None = None
    reported_spec_error: str | None = None
    was_leaking: bool = False
    writes: int = 0
    info: Warn | None = None
    """(reason, message) -> post a Normal Event (``None``: not posted)."""
    latch: dict[str, Any] | None = None
    """The leak latch this poller last computed (authoritative once ``latch_loaded``: a body the
    watch has not refreshed yet must not undo a latch just written or cleared)."""
    latch_loaded: bool = False
    cleared_latched_at: str | None = None
    """``latchedAt`` of the latch this poller cleared (a stale body still showing it is ignored)."""
    handled_ack: tuple[str, str | None] | None = None
    """(annotation value, resourceVersion) of the acknowledgement last handled."""
    credentials: CredentialsLoader | None = None
    """Reads ``spec.telemetry.redfish.credentialsSecretName`` (on every poll: a rotated Secret
    is used from the next poll on); ``None``: a tank that names a Secret cannot be read."""
    tokens: SessionTokens = field(default_factory=SessionTokens)
    """Redfish session tokens of this tank (authMethod Session), kept across polls."""
    _tls: tuple[str, ssl.SSLContext] | None = None

    def due(self) -> bool:
        return self.monotonic() >= self.next_poll

    async def poll(self, spec: ImmersionPodSpec) -> None:
        """One Redfish read; never raises (errors become the outcome)."""
        redfish = spec.telemetry.redfish
        self.next_poll = self.monotonic() + spec.telemetry.poll_interval_seconds
        if redfish is None:  # CEL forbids this for source Redfish; be safe anyway
            self.outcome = PollOutcome(None, "spec.telemetry.redfish is not set", self.clock())
            return
        session = await self.session() if self.session is not None else None
        try:
            credentials, tls = await self._credentials(redfish)
            client = RedfishClient(
                redfish.endpoint,
                redfish.unit_id,
                redfish.connector_id,
                session=session,
                timeout_s=float(redfish.timeout_seconds),
                clock=self.clock,
                credentials=credentials,
                tokens=self.tokens,
                tls=tls,
            )
        except RedfishError as error:
            self._poll_failed(error)
            return
        try:
            reading = await client.read()
        except RedfishError as error:
            # keep the last good reading: it stays valid until it is older than staleAfter
            self._poll_failed(error)
            return
        finally:
            await client.close()
        TELEMETRY_POLLS.labels(self.name, "ok").inc()
        self.reported_error = None
        self.outcome = PollOutcome(reading, None, self.clock())
        for problem in reading.problems:
            TELEMETRY_REJECTED.labels(
                "tank", _problem_metric_field(problem), problem.kind.value
            ).inc()
        problems = frozenset(reading.problems)
        new = problems - self.reported_problems
        if new:
            self.warn(
                "TelemetryRejected",
                "ignored invalid tank telemetry: "
                + "; ".join(p.describe() for p in sorted(new, key=lambda p: p.field)),
            )
        self.reported_problems = problems
        if reading.leak_state.is_leak and not self.was_leaking:
            self.warn("LeakDetected", f"leak {reading.leak_state.value}: {leak_message(reading)}")
        self.was_leaking = reading.leak_state.is_leak

    def _poll_failed(self, error: RedfishError) -> None:
        TELEMETRY_POLLS.labels(self.name, "error").inc()
        self.outcome = PollOutcome(self.outcome.reading, str(error), self.clock())
        if self.reported_error != str(error):
            self.warn("TelemetryUnreachable", str(error)[:1000])
            self.reported_error = str(error)

    async def _credentials(
        self, redfish: RedfishSpec
    ) -> tuple[RedfishCredentials | None, ssl.SSLContext | None]:
        """The tank's credentials and TLS context, read now. Raises :class:`RedfishError`."""
        name = redfish.credentials_secret_name
        if name is None:
            return None, None
        if self.credentials is None:
            raise RedfishError(f"credentials Secret {name!r}: no Secret reader configured")
        session = redfish.auth_method is RedfishAuthMethod.SESSION
        credentials = await self.credentials(name, session)
        if not credentials.ca_pem:
            return credentials, None
        if self._tls is None or self._tls[0] != credentials.ca_pem:
            try:
                self._tls = (credentials.ca_pem, ssl_context(credentials.ca_pem))
            except ValueError as error:
                raise RedfishError(f"credentials Secret {name!r}: {error}") from error
        return credentials, self._tls[1]

    async def tick(
        self,
        *,
        spec: Mapping[str, Any],
        status: Mapping[str, Any],
        generation: int | None,
        nodes: int | None,
        replicas: int | None = None,
        force: bool = False,
        ack: str | None = None,
        ack_version: str | None = None,
    ) -> dict[str, Any] | None:
        """Poll if due; return the status patch to apply, or ``None`` (no write).

        ``ack`` is the value of the :data:`ACK_ANNOTATION` annotation when it is set
        (``ack_version``: the object's resourceVersion, so one annotation is handled once); once
        :attr:`handled_ack` names it, the caller removes the annotation whatever the outcome."""
        try:
            parsed = parse_immersionpod_spec(spec)
        except (ValidationError, ValueError) as error:
            message = str(error).splitlines()[0][:1000]
            if self.reported_spec_error != message:
                self.warn("InvalidSpec", message)
                self.reported_spec_error = message
            # a permanent failure until the spec changes: Stalled (kstatus Failed, Argo Degraded)
            conditions = set_kstatus(
                status.get("conditions"),
                ready=False,
                reason="InvalidSpec",
                message=message,
                stalled=True,
                observed_generation=generation,
                now=self.clock(),
            )
            if _conditions_key(conditions) == _conditions_key(status.get("conditions")):
                return None
            return {"observedGeneration": generation, "conditions": conditions}
        self.reported_spec_error = None
        if parsed.telemetry.source is not TelemetrySource.REDFISH:
            return self._unsupported_source(status, generation)
        latch = self._latch_before(status.get("leakLatch"))
        if ack is not None and (ack, ack_version) != self.handled_ack:
            self.handled_ack = (ack, ack_version)
            await self.poll(parsed)  # judge the acknowledgement on a fresh reading
            latch = self._acknowledge(latch, ack)
        elif force or self.due():
            await self.poll(parsed)
        now = self.clock()
        desired = desired_status(
            spec=parsed,
            generation=generation,
            current=status,
            outcome=self.outcome,
            now=now,
            nodes=nodes,
            replicas=replicas,
            latch=latch,
            name=self.name,
        )
        new_latch = desired.get("leakLatch")
        if new_latch is not None and latch is None:
            self.warn(
                "LeakLatched",
                f"leak {new_latch['state']} latched ({new_latch.get('message', '')}): the tank "
                f"stays cordoned until acknowledged; once every detector reads OK, "
                f"{clear_command(self.name)}",
            )
        self.latch = new_latch
        self._export(desired)
        stale_after = float(parsed.telemetry.stale_after_seconds)
        if not needs_write(status, desired, now=now, stale_after=stale_after):
            return None
        self.writes += 1
        return desired

    def _latch_before(self, stored: Any) -> dict[str, Any] | None:
        """The latch to start this tick from: the stored one on the first tick (it survives
        restarts in status), then this poller's own, unless the stored one is a latch this poller
        neither wrote nor cleared (another operator replica wrote it)."""
        stored_latch = dict(stored) if isinstance(stored, Mapping) and stored.get("state") else None
        if not self.latch_loaded:
            self.latch_loaded = True
            self.latch = stored_latch
        elif stored_latch is not None and stored_latch.get("latchedAt") not in (
            (self.latch or {}).get("latchedAt"),
            self.cleared_latched_at,
        ):
            self.latch = stored_latch
        return self.latch

    def _acknowledge(self, latch: dict[str, Any] | None, note: str) -> dict[str, Any] | None:
        """Judge an acknowledgement against the poll just made; return the latch to keep."""
        note = note.strip()[:200] or "(empty)"
        if latch is None:
            TANK_LEAK_ACKNOWLEDGEMENTS.labels(self.name, "notLatched").inc()
            if self.info is not None:
                self.info(
                    "LeakAcknowledged",
                    f"no leak is latched; acknowledgement {note!r} removed",
                )
            return None
        refusal = acknowledgement_refusal(self.outcome)
        if refusal is not None:
            TANK_LEAK_ACKNOWLEDGEMENTS.labels(self.name, "refused").inc()
            self.warn(
                "LeakAcknowledgementRefused",
                f"leak latch kept, acknowledgement {note!r} refused and removed: {refusal}; "
                f"once every detector reads OK, {clear_command(self.name)}",
            )
            return latch
        TANK_LEAK_ACKNOWLEDGEMENTS.labels(self.name, "cleared").inc()
        self.cleared_latched_at = str(latch.get("latchedAt"))
        if self.info is not None:
            self.info(
                "LeakLatchCleared",
                f"leak {latch.get('state')} latched at {latch.get('latchedAt')} cleared by "
                f"acknowledgement {note!r}; every leak detector reads OK",
            )
        return None

    def _unsupported_source(
        self, status: Mapping[str, Any], generation: int | None
    ) -> dict[str, Any] | None:
        conditions = status.get("conditions")
        for type_, value, reason, message in (
            (
                CONDITION_READY,
                False,
                "UnsupportedTelemetrySource",
                "telemetry.source NodeAnnotations is not implemented: no tank telemetry",
            ),
            (
                CONDITION_TELEMETRY_FRESH,
                "Unknown",
                "UnsupportedTelemetrySource",
                "telemetry.source NodeAnnotations is not implemented",
            ),
        ):
            conditions = set_condition(
                conditions,
                type_,
                value,
                reason,
                message,
                observed_generation=generation,
                now=self.clock(),
            )
        conditions = set_condition(
            conditions,
            STALLED,
            True,
            "UnsupportedTelemetrySource",
            "telemetry.source NodeAnnotations is not implemented: change it to Redfish",
            observed_generation=generation,
            now=self.clock(),
        )
        if _conditions_key(conditions) == _conditions_key(status.get("conditions")):
            return None
        return {"observedGeneration": generation, "conditions": conditions}

    def _export(self, desired: Mapping[str, Any]) -> None:
        age = desired.get("telemetryAgeSeconds")
        if age is None:
            clear_gauge(TELEMETRY_AGE, "tank", self.name)
        else:
            TELEMETRY_AGE.labels("tank", self.name).set(age)
        for resource, key in (("power", "powerHeadroomKW"), ("thermal", "thermalHeadroomKW")):
            value = desired.get(key)
            if value is None:
                clear_gauge(TANK_HEADROOM, self.name, resource)
            else:
                TANK_HEADROOM.labels(self.name, resource).set(value)
        load = desired.get("itLoadKW")
        if load is None:
            clear_gauge(TANK_IT_LOAD, self.name)
        else:
            TANK_IT_LOAD.labels(self.name).set(load)
        leak = desired.get("leakState")
        if leak in (None, LeakState.UNKNOWN.value):
            clear_gauge(TANK_LEAK, self.name)
        else:
            TANK_LEAK.labels(self.name).set(1 if LeakState(leak).is_leak else 0)
        TANK_LEAK_LATCHED.labels(self.name).set(1 if desired.get("leakLatch") else 0)

    def forget(self) -> None:
        """Drop this tank's metric series."""
        clear_gauge(TELEMETRY_AGE, "tank", self.name)
        clear_gauge(TANK_HEADROOM, self.name, "power")
        clear_gauge(TANK_HEADROOM, self.name, "thermal")
        clear_gauge(TANK_IT_LOAD, self.name)
        clear_gauge(TANK_LEAK, self.name)
        clear_gauge(TANK_LEAK_LATCHED, self.name)
