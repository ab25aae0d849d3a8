"""Immersion tank telemetry: a DMTF Redfish ``ImmersionUnit`` client and pure headroom math.

Resources read (``{base}`` is the endpoint; ``/redfish/v1`` is added unless already present)::

    {base}/redfish/v1/ThermalEquipment/ImmersionUnits/{unit}
        CoolingCapacityWatts, Coolant.SpecificHeatkJoulesPerKgK, Status.Health
    .../ImmersionUnits/{unit}/PrimaryCoolantConnectors/{n}
        SupplyTemperatureCelsius, ReturnTemperatureCelsius, FlowLitersPerMinute, HeatRemovedkW
        (each a sensor excerpt ``{"Reading": x}``)
    .../ImmersionUnits/{unit}/LeakDetection/LeakDetectors
        Members: inline ``{"DetectorState": ...}`` or ``{"@odata.id": ...}`` links (followed)

Authentication (:class:`RedfishCredentials`): HTTP Basic on every request, or a Redfish session
(``POST /redfish/v1/SessionService/Sessions`` with ``UserName``/``Password``; its ``X-Auth-Token``
goes on every request, kept in a :class:`SessionTokens` across polls, and renewed once when the
service answers 401). An https endpoint can be trusted through a PEM CA bundle.

Bad values never raise: each field is valid or ``None`` with a
:class:`~tokenfleet.telemetry.problems.TelemetryProblem`. Transport failures (timeout, refused,
non-2xx or non-JSON on the unit or connector) raise :class:`RedfishError`; a failed leak-detector
read makes the leak state ``Unknown`` (with a problem), never ``OK``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, Final, cast
from urllib.parse import quote, urlsplit

import aiohttp

from tokenfleet.telemetry.problems import (
    ProblemKind,
    TelemetryProblem,
    check_range,
    raw_text,
)

__all__ = [
    "CAPACITY_WATTS_RANGE",
    "COOLANT_TEMP_C_RANGE",
    "FLOW_LPM_RANGE",
    "HEAT_KW_RANGE",
    "SPECIFIC_HEAT_RANGE",
    "Headroom",
    "Health",
    "LeakDetector",
    "LeakState",
    "RedfishClient",
    "RedfishCredentials",
    "RedfishError",
    "SessionTokens",
    "TankReading",
    "compute_headroom",
    "credentials_from_secret",
    "heat_from_flow_kw",
    "power_headroom_kw",
    "power_limit_kw",
    "thermal_capacity_kw",
    "unit_url",
]

CAPACITY_WATTS_RANGE: Final = (0.0, 100e6)
SPECIFIC_HEAT_RANGE: Final = (0.1, 10.0)
COOLANT_TEMP_C_RANGE: Final = (-40.0, 150.0)
FLOW_LPM_RANGE: Final = (0.0, 100_000.0)
HEAT_KW_RANGE: Final = (0.0, 100_000.0)

# Field names used in problems (the Redfish property names).
F_CAPACITY: Final = "CoolingCapacityWatts"
F_SPECIFIC_HEAT: Final = "Coolant.SpecificHeatkJoulesPerKgK"
F_HEALTH: Final = "Status.Health"
F_SUPPLY: Final = "SupplyTemperatureCelsius"
F_RETURN: Final = "ReturnTemperatureCelsius"
F_FLOW: Final = "FlowLitersPerMinute"
F_HEAT: Final = "HeatRemovedkW"
F_LEAK: Final = "LeakDetectors"


class Health(StrEnum):
    """Redfish ``Status.Health``."""

    OK = "OK"
    WARNING = "Warning"
    CRITICAL = "Critical"


class LeakState(StrEnum):
    """Aggregate leak state of a tank (the ``status.leakState`` enum)."""

    OK = "OK"
    WARNING = "Warning"
    CRITICAL = "Critical"
    UNKNOWN = "Unknown"

    @property
    def is_leak(self) -> bool:
        """Warning or Critical: a detector reports liquid."""
        return self in (LeakState.WARNING, LeakState.CRITICAL)


class RedfishError(Exception):
    """The endpoint could not be read (timeout, connection, HTTP status, not JSON)."""


@dataclass(frozen=True, slots=True)
class LeakDetector:
    """One detector: its ``Id``/``Name`` (or URL) and state (``None`` = unreadable)."""

    name: str
    state: Health | None


@dataclass(frozen=True, slots=True)
class TankReading:
    """One poll of an immersion unit. Each measured field is valid or ``None`` (see problems)."""

    unit_id: str
    observed_at: datetime
    """When the poll completed (aware UTC)."""
    cooling_capacity_watts: float | None = None
    specific_heat_kj_per_kg_k: float | None = None
    health: Health | None = None
    supply_temp_c: float | None = None
    return_temp_c: float | None = None
    flow_lpm: float | None = None
    heat_removed_kw: float | None = None
    leak_state: LeakState = LeakState.UNKNOWN
    leak_detectors: tuple[LeakDetector, ...] = ()
    problems: tuple[TelemetryProblem, ...] = ()


@dataclass(frozen=True, slots=True)
class Headroom:
    """Power and thermal headroom of a tank (kW). ``None`` = unknown (never assume room)."""

    it_load_kw: float | None
    """Measured IT load: ``HeatRemovedkW`` (≈ IT power in immersion), else flow-derived heat."""
    power_limit_kw: float
    """``capacityKW * (1 - safetyMarginPercent/100)``."""
    power_headroom_kw: float | None
    """``power_limit_kw - it_load_kw`` (may be negative: over budget)."""
    thermal_capacity_kw: float | None
    """``flow/60 * density * c_p * (maxReturn - supply)``, ≥ 0; ``None`` if flow/supply unknown."""
    heat_limit_kw: float | None
    """``min(thermal_capacity_kw, heatRejectionKW)``."""
    thermal_headroom_kw: float | None
    """``heat_limit_kw - it_load_kw`` (may be negative)."""


# ---------------------------------------------------------------------------------------------
# Pure headroom math


def power_limit_kw(capacity_kw: float, safety_margin_percent: float) -> float:
    """Usable power: capacity * (1 - margin). The margin is clamped to 0..100 %."""
    margin = min(max(safety_margin_percent, 0.0), 100.0)
    return capacity_kw * (1.0 - margin / 100.0)


def power_headroom_kw(capacity_kw: float, safety_margin_percent: float, it_load_kw: float) -> float:
    """Power headroom = capacity * (1 - margin) - IT load (negative when over budget)."""
    return power_limit_kw(capacity_kw, safety_margin_percent) - it_load_kw


def heat_from_flow_kw(
    flow_lpm: float,
    density_kg_per_l: float,
    specific_heat_kj_per_kg_k: float,
    delta_t_k: float,
) -> float:
    """Heat carried by a coolant flow, kW: m_dot * c_p * dT, m_dot = flow/60 * density (kg/s)."""
    return flow_lpm / 60.0 * density_kg_per_l * specific_heat_kj_per_kg_k * delta_t_k


def thermal_capacity_kw(
    flow_lpm: float,
    density_kg_per_l: float,
    specific_heat_kj_per_kg_k: float,
    max_return_temp_c: float,
    supply_temp_c: float,
) -> float:
    """Heat the loop can carry before the return reaches its limit (≥ 0)."""
    return max(
        0.0,
        heat_from_flow_kw(
            flow_lpm, density_kg_per_l, specific_heat_kj_per_kg_k, max_return_temp_c - supply_temp_c
        ),
    )


def compute_headroom(
    reading: TankReading,
    *,
    capacity_kw: float,
    safety_margin_percent: float,
    heat_rejection_kw: float,
    max_return_temp_c: float,
    density_kg_per_l: float,
    specific_heat_kj_per_kg_k: float,
) -> Headroom:
    """Headroom from one reading and the ImmersionPod spec's limits.

    The coolant's specific heat comes from the reading when valid, else from the spec. The IT
    load is ``HeatRemovedkW``, else the flow-derived heat
    ``flow/60 * density * c_p * (return - supply)``
    when all of those are known; otherwise unknown and so is every headroom.
    """
    c_p = reading.specific_heat_kj_per_kg_k or specific_heat_kj_per_kg_k
    load = reading.heat_removed_kw
    if (
        load is None
        and reading.flow_lpm is not None
        and reading.supply_temp_c is not None
        and reading.return_temp_c is not None
    ):
        load = max(
            0.0,
            heat_from_flow_kw(
                reading.flow_lpm,
                density_kg_per_l,
                c_p,
                reading.return_temp_c - reading.supply_temp_c,
            ),
        )
    limit = power_limit_kw(capacity_kw, safety_margin_percent)
    capacity: float | None = None
    if reading.flow_lpm is not None and reading.supply_temp_c is not None:
        capacity = thermal_capacity_kw(
            reading.flow_lpm, density_kg_per_l, c_p, max_return_temp_c, reading.supply_temp_c
        )
    heat_limit = None if capacity is None else min(capacity, heat_rejection_kw)
    return Headroom(
        it_load_kw=load,
        power_limit_kw=limit,
        power_headroom_kw=None if load is None else limit - load,
        thermal_capacity_kw=capacity,
        heat_limit_kw=heat_limit,
        thermal_headroom_kw=None if load is None or heat_limit is None else heat_limit - load,
    )


# ---------------------------------------------------------------------------------------------
# Parsing (pure)


def _sensor(
    doc: Mapping[str, Any], field: str, low: float, high: float
) -> tuple[float | None, TelemetryProblem | None]:
    excerpt = doc.get(field)
    if excerpt is None:
        return None, TelemetryProblem(field, None, ProblemKind.MISSING)
    if not isinstance(excerpt, Mapping):
        return None, TelemetryProblem(field, raw_text(excerpt), ProblemKind.UNPARSABLE)
    if "Reading" not in excerpt:
        return None, TelemetryProblem(field, None, ProblemKind.MISSING)
    return check_range(field, excerpt["Reading"], low, high)


def _health(field: str, value: object) -> tuple[Health | None, TelemetryProblem | None]:
    if value is None:
        return None, TelemetryProblem(field, None, ProblemKind.MISSING)
    try:
        return Health(str(value)) if isinstance(value, str) else Health(""), None
    except ValueError:
        return None, TelemetryProblem(field, raw_text(value), ProblemKind.UNPARSABLE)


def aggregate_leak_state(detectors: Sequence[LeakDetector]) -> LeakState:
    """Critical > Warning > (any unreadable or none at all → Unknown) > OK."""
    states = [d.state for d in detectors]
    if Health.CRITICAL in states:
        return LeakState.CRITICAL
    if Health.WARNING in states:
        return LeakState.WARNING
    if not states or None in states:
        return LeakState.UNKNOWN
    return LeakState.OK


def parse_unit(
    unit_id: str,
    unit: Mapping[str, Any],
    connector: Mapping[str, Any],
    detectors: Sequence[LeakDetector] | None,
    observed_at: datetime,
    extra_problems: Sequence[TelemetryProblem] = (),
) -> TankReading:
    """Build a :class:`TankReading` from the Redfish documents (pure).

    ``detectors=None`` means the detector collection could not be read (leak state Unknown)."""
    problems: list[TelemetryProblem] = list(extra_problems)

    def keep(result: tuple[Any, TelemetryProblem | None]) -> Any:
        value, problem = result
        if problem is not None:
            problems.append(problem)
        return value

    capacity = keep(check_range(F_CAPACITY, unit.get(F_CAPACITY), *CAPACITY_WATTS_RANGE))
    coolant = unit.get("Coolant")
    if isinstance(coolant, Mapping):
        c_p = keep(
            check_range(
                F_SPECIFIC_HEAT, coolant.get("SpecificHeatkJoulesPerKgK"), *SPECIFIC_HEAT_RANGE
            )
        )
    else:
        c_p = None
        kind = ProblemKind.MISSING if coolant is None else ProblemKind.UNPARSABLE
        problems.append(TelemetryProblem(F_SPECIFIC_HEAT, raw_text(coolant), kind))
    status = unit.get("Status")
    health = keep(_health(F_HEALTH, status.get("Health") if isinstance(status, Mapping) else None))

    supply = keep(_sensor(connector, F_SUPPLY, *COOLANT_TEMP_C_RANGE))
    ret = keep(_sensor(connector, F_RETURN, *COOLANT_TEMP_C_RANGE))
    flow = keep(_sensor(connector, F_FLOW, *FLOW_LPM_RANGE))
    heat = keep(_sensor(connector, F_HEAT, *HEAT_KW_RANGE))

    leak_detectors = tuple(detectors or ())
    for detector in leak_detectors:
        if detector.state is None:
            problems.append(
                TelemetryProblem(f"{F_LEAK}/{detector.name}", None, ProblemKind.UNPARSABLE)
            )
    return TankReading(
        unit_id=unit_id,
        observed_at=observed_at,
        cooling_capacity_watts=capacity,
        specific_heat_kj_per_kg_k=c_p,
        health=health,
        supply_temp_c=supply,
        return_temp_c=ret,
        flow_lpm=flow,
        heat_removed_kw=heat,
        leak_state=LeakState.UNKNOWN if detectors is None else aggregate_leak_state(leak_detectors),
        leak_detectors=leak_detectors,
        problems=tuple(problems),
    )


# ---------------------------------------------------------------------------------------------
# Authentication

SESSIONS_PATH: Final = "/redfish/v1/SessionService/Sessions"


@dataclass(frozen=True, slots=True)
class RedfishCredentials:
    """What a tank's credentials Secret holds (``username``, ``password``, ``ca.crt``)."""

    username: str | None = None
    password: str | None = None
    session: bool = False
    """Use a Redfish session (X-Auth-Token) instead of HTTP Basic."""
    ca_pem: str | None = None
    """PEM CA bundle to trust for https (else the system's)."""

    def __repr__(self) -> str:  # never print the password
        return (
            f"RedfishCredentials(username={self.username!r}, session={self.session}, "
            f"ca={'yes' if self.ca_pem else 'no'})"
        )

    @property
    def key(self) -> str:
        """Identifies the login (a rotated password is a new key); a hash, not the secret."""
        raw = f"{self.username}\0{self.password}\0{self.session}".encode()
        return hashlib.sha256(raw).hexdigest()


class SessionTokens:
    """Redfish session tokens by (service origin, credentials key), kept across polls."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str], str] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.logins = 0
        """Sessions created (for tests and metrics)."""

    def get(self, origin: str, key: str) -> str | None:
        return self._tokens.get((origin, key))

    def lock(self, origin: str, key: str) -> asyncio.Lock:
        return self._locks.setdefault((origin, key), asyncio.Lock())

    def put(self, origin: str, key: str, token: str) -> None:
        # a rotated password makes the old login's token useless here: forget it
        for other in [k for k in self._tokens if k[0] == origin and k[1] != key]:
            del self._tokens[other]
        self._tokens[(origin, key)] = token
        self.logins += 1

    def drop(self, origin: str, key: str, token: str) -> None:
        if self._tokens.get((origin, key)) == token:
            del self._tokens[(origin, key)]


def credentials_from_secret(
    secret: Mapping[str, Any], *, session: bool, where: str
) -> RedfishCredentials:
    """The credentials in a Secret body (pure): ``data`` (base64) or ``stringData`` keys
    ``username``, ``password``, ``ca.crt``. Raises ``ValueError`` naming the Secret and key."""
    import binascii

    values: dict[str, str] = {}
    data = secret.get("data") or {}
    for key in ("username", "password", "ca.crt"):
        raw = data.get(key) if isinstance(data, Mapping) else None
        if raw is None:
            continue
        try:
            values[key] = base64.b64decode(str(raw), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as error:
            raise ValueError(f"Secret {where}: key {key!r} is not base64 UTF-8 text") from error
    username, password = values.get("username"), values.get("password")
    if (username is None) != (password is None):
        missing = "password" if password is None else "username"
        raise ValueError(f"Secret {where}: key {missing!r} is missing (username needs password)")
    if username is None and "ca.crt" not in values:
        raise ValueError(f"Secret {where}: no 'username'/'password' and no 'ca.crt' key")
    if username is not None and not username.strip():
        raise ValueError(f"Secret {where}: key 'username' is empty")
    return RedfishCredentials(
        username=username,
        password=password,
        session=session,
        ca_pem=values.get("ca.crt") or None,
    )


def ssl_context(ca_pem: str) -> ssl.SSLContext:
    """A client TLS context trusting exactly the CAs in ``ca_pem``. Raises ``ValueError``."""
    try:
        return ssl.create_default_context(cadata=ca_pem)
    except ssl.SSLError as error:
        raise ValueError(f"ca.crt is not a PEM CA bundle: {error}") from error


# ---------------------------------------------------------------------------------------------
# HTTP client


def unit_url(endpoint: str, unit_id: str) -> str:
    """URL of the ImmersionUnit resource for an endpoint (origin or ``…/redfish/v1``)."""
    base = endpoint.rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"Redfish endpoint must be an http(s) URL, got {endpoint!r}")
    if not parts.path.endswith("/redfish/v1"):
        base += "/redfish/v1"
    return f"{base}/ThermalEquipment/ImmersionUnits/{quote(unit_id, safe='')}"


DetectorsResult = tuple[list[LeakDetector] | None, list[TelemetryProblem]]


class RedfishClient:
    """Reads one ImmersionUnit. Pass a shared ``aiohttp.ClientSession`` or let it own one.

    ``timeout_s`` bounds each request; :meth:`read` does at most 3 + (detector links) requests.
    """

    def __init__(
        self,
        endpoint: str,
        unit_id: str,
        connector_id: str = "1",
        *,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 5.0,
        clock: Callable[[], datetime] | None = None,
        credentials: RedfishCredentials | None = None,
        tokens: SessionTokens | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.unit_id = unit_id
        self.credentials = credentials
        self._tokens = tokens if tokens is not None else SessionTokens()
        self._ssl: ssl.SSLContext | bool = tls if tls is not None else True
        self.connector_id = connector_id
        self.url = unit_url(endpoint, unit_id)
        parts = urlsplit(self.url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock or (lambda: datetime.now(UTC))

    async def __aenter__(self) -> RedfishClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client created it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._owns_session = True
        return self._session

    def _auth_ready(self) -> bool:
        creds = self.credentials
        return creds is not None and bool(creds.username) and creds.password is not None

    async def _login(self, stale: str | None) -> str:
        """A session token for the credentials (one login at a time per service and user)."""
        creds = self.credentials
        assert creds is not None and creds.username and creds.password is not None
        key = creds.key
        async with self._tokens.lock(self._origin, key):
            token = self._tokens.get(self._origin, key)
            if token is not None and token != stale:
                return token  # another request logged in meanwhile
            url = self._origin + SESSIONS_PATH
            session = self._get_session()
            try:
                async with session.post(
                    url,
                    json={"UserName": creds.username, "Password": creds.password},
                    timeout=self._timeout,
                    headers={"Accept": "application/json"},
                    ssl=self._ssl,
                ) as response:
                    if response.status not in (200, 201):
                        text = (await response.text())[:200]
                        raise RedfishError(
                            f"POST {url} (session login as {creds.username!r}): "
                            f"HTTP {response.status} {text!r}"
                        )
                    token = response.headers.get("X-Auth-Token")
            except TimeoutError as error:
                raise RedfishError(f"POST {url}: timed out after {self._timeout.total}s") from error
            except aiohttp.ClientError as error:
                raise RedfishError(f"POST {url}: {type(error).__name__}: {error}") from error
            if not token:
                raise RedfishError(f"POST {url}: no X-Auth-Token in the session response")
            self._tokens.put(self._origin, key, token)
            return token

    async def _request_headers(self) -> tuple[dict[str, str], str | None]:
        """The request headers (Accept, and Authorization or X-Auth-Token) and the session
        token used, if any."""
        headers = {"Accept": "application/json"}
        creds = self.credentials
        if not self._auth_ready() or creds is None:
            return headers, None
        if not creds.session:
            pair = f"{creds.username}:{creds.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
            return headers, None
        token = self._tokens.get(self._origin, creds.key) or await self._login(None)
        headers["X-Auth-Token"] = token
        return headers, token

    async def _get_json(self, url: str) -> Mapping[str, Any]:
        session = self._get_session()
        headers, token = await self._request_headers()
        try:
            for attempt in (1, 2):
                async with session.get(
                    url, timeout=self._timeout, headers=headers, ssl=self._ssl
                ) as response:
                    if response.status == 401 and token is not None and attempt == 1:
                        # the session expired or was deleted on the BMC: log in again, once
                        assert self.credentials is not None
                        self._tokens.drop(self._origin, self.credentials.key, token)
                        token = await self._login(token)
                        headers = {**headers, "X-Auth-Token": token}
                        continue
                    if response.status != 200:
                        text = (await response.text())[:200]
                        raise RedfishError(f"GET {url}: HTTP {response.status} {text!r}")
                    try:
                        doc = await response.json(content_type=None)
                    except ValueError as error:
                        raise RedfishError(f"GET {url}: body is not JSON ({error})") from error
                    break
        except TimeoutError as error:
            raise RedfishError(f"GET {url}: timed out after {self._timeout.total}s") from error
        except aiohttp.ClientError as error:
            raise RedfishError(f"GET {url}: {type(error).__name__}: {error}") from error
        if not isinstance(doc, Mapping):
            raise RedfishError(f"GET {url}: expected a JSON object, got {type(doc).__name__}")
        return doc

    def _resolve(self, odata_id: str) -> str:
        return odata_id if "://" in odata_id else self._origin + odata_id

    async def _detector(self, member: Mapping[str, Any]) -> LeakDetector:
        doc: Mapping[str, Any] = member
        name = str(member.get("Id") or member.get("Name") or member.get("@odata.id") or "?")
        if "DetectorState" not in member and isinstance(member.get("@odata.id"), str):
            try:
                doc = await self._get_json(self._resolve(member["@odata.id"]))
            except RedfishError:
                return LeakDetector(name, None)
            name = str(doc.get("Id") or doc.get("Name") or name)
        state, _ = _health("DetectorState", doc.get("DetectorState"))
        return LeakDetector(name, state)

    async def _detectors(self) -> DetectorsResult:
        url = f"{self.url}/LeakDetection/LeakDetectors"
        try:
            collection = await self._get_json(url)
        except RedfishError as error:
            return None, [TelemetryProblem(F_LEAK, raw_text(str(error)), ProblemKind.MISSING)]
        members = collection.get("Members")
        if not isinstance(members, list):
            kind = ProblemKind.MISSING if members is None else ProblemKind.UNPARSABLE
            return None, [TelemetryProblem(F_LEAK, raw_text(members), kind)]
        detectors = await asyncio.gather(
            *(self._detector(m) for m in members if isinstance(m, Mapping))
        )
        problems = []
        if len(detectors) != len(members):
            problems.append(TelemetryProblem(F_LEAK, raw_text(members), ProblemKind.UNPARSABLE))
            return None, problems
        return list(detectors), problems

    async def read(self) -> TankReading:
        """Poll the unit, its connector and its leak detectors concurrently.

        Raises :class:`RedfishError` if the unit or the connector cannot be read."""
        # every request finishes (each is bounded by the timeout) before an error is raised, so
        # none outlives the client's session
        results = await asyncio.gather(
            self._get_json(self.url),
            self._get_json(
                f"{self.url}/PrimaryCoolantConnectors/{quote(self.connector_id, safe='')}"
            ),
            self._detectors(),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        unit, connector, (detectors, problems) = cast(
            tuple[Mapping[str, Any], Mapping[str, Any], DetectorsResult], results
        )
        return parse_unit(
            self.unit_id,
            unit,
            connector,
            detectors,
            observed_at=self._clock(),
            extra_problems=problems,
        )
