"""A DMTF Redfish-shaped immersion tank simulator (aiohttp, loopback only).

Serves, for each tank id ``T``::

    GET /redfish/v1
    GET /redfish/v1/ThermalEquipment/ImmersionUnits[/T]
    GET /redfish/v1/ThermalEquipment/ImmersionUnits/T/PrimaryCoolantConnectors[/1]
    GET /redfish/v1/ThermalEquipment/ImmersionUnits/T/LeakDetection
    GET /redfish/v1/ThermalEquipment/ImmersionUnits/T/LeakDetection/LeakDetectors[/D]

and a control API for other processes (the e2e tests, ``make dev``)::

    GET   /_sim/tanks/T    -> the tank's settable state as JSON
    PATCH /_sim/tanks/T    <- JSON object of fields to set (see :class:`TankState`)

Authentication, per tank, as a BMC does (DMTF DSP0266): set ``username``/``password`` on a tank
and its resources answer 401 unless the request carries HTTP Basic credentials or the
``X-Auth-Token`` of a session made with ``POST /redfish/v1/SessionService/Sessions``
(``{"UserName", "Password"}`` -> 201, ``X-Auth-Token`` and ``Location`` headers; ``DELETE`` the
Location ends it). Changing a tank's password ends its user's sessions. ``session_logins`` counts
logins, ``unauthorized`` counts 401s. ``TankSimulator(ssl_context=...)`` serves https.

Readings are stored raw: set any JSON value (a number, ``"garbage"``, ``float("nan")`` which is
served as the JSON extension ``NaN``, ``None``), or list property names in ``missing`` to omit
them. ``http_status`` != 200 makes every resource of the tank fail, ``delay_seconds`` delays them.

Python: ``async with TankSimulator(["tank-a"]) as sim: sim.set("tank-a", supply_c=31.0)``; or
:class:`ThreadedTankSimulator` for synchronous tests. CLI::

    python -m e2e.sim.tank --tanks tank-a,tank-b [--port 0]

prints one JSON line ``{"url": ..., "tanks": [...]}`` and serves until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import json
import secrets
import ssl
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

ROOT = "/redfish/v1"
UNITS = f"{ROOT}/ThermalEquipment/ImmersionUnits"
SESSIONS = f"{ROOT}/SessionService/Sessions"
LEAK_STATES = ("OK", "Warning", "Critical")


@dataclass
class TankState:
    """Everything a test can set. Values are served as-is (no validation: that is the point)."""

    unit_id: str
    capacity_watts: Any = 150_000.0
    specific_heat: Any = 2.1
    health: Any = "OK"
    supply_c: Any = 32.0
    return_c: Any = 40.0
    flow_lpm: Any = 300.0
    heat_kw: Any = 60.0
    leak: dict[str, Any] = field(default_factory=lambda: {"Moisture1": "OK", "FloatSwitch1": "OK"})
    """Detector id -> DetectorState."""
    missing: list[str] = field(default_factory=list)
    """Property names to omit: CoolingCapacityWatts, Coolant, Status, SupplyTemperatureCelsius,
    ReturnTemperatureCelsius, FlowLitersPerMinute, HeatRemovedkW, or ``Reading:<Property>`` to keep
    the excerpt but drop its ``Reading``, or ``LeakDetectors`` (collection 404)."""
    http_status: int = 200
    delay_seconds: float = 0.0
    inline_detectors: bool = False
    """Serve detector states inline in the collection instead of as links."""
    connector_id: str = "1"
    username: str | None = None
    """With ``password``: the credentials the tank's resources require (None: open)."""
    password: str | None = None
    requests: int = 0
    """Number of HTTP requests served for this tank (read-only counter)."""

    def settable(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("requests")
        return data


def _dumps(doc: Any) -> str:
    # allow_nan=True: the JSON extension NaN/Infinity, as a sloppy BMC might send.
    return json.dumps(doc, allow_nan=True)


def _sensor(state: TankState, prop: str, value: Any, unit_path: str) -> dict[str, Any] | None:
    if prop in state.missing:
        return None
    excerpt: dict[str, Any] = {"DataSourceUri": f"{unit_path}/Sensors/{prop}"}
    if f"Reading:{prop}" not in state.missing:
        excerpt["Reading"] = value
    return excerpt


class TankSimulator:
    """The simulator server. ``start()``/``stop()`` or ``async with``; ``url`` once started."""

    def __init__(
        self,
        tanks: Iterable[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the simulator listens on loopback only")
        self.tanks: dict[str, TankState] = {t: TankState(unit_id=t) for t in tanks}
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self._runner: web.AppRunner | None = None
        self.sessions: dict[str, tuple[str, str]] = {}
        """Session id -> (token, username)."""
        self.session_logins = 0
        self.unauthorized = 0

    # ---- Python control API --------------------------------------------------------------
    def tank(self, unit_id: str) -> TankState:
        return self.tanks[unit_id]

    def add(self, unit_id: str) -> TankState:
        return self.tanks.setdefault(unit_id, TankState(unit_id=unit_id))

    def set(self, unit_id: str, **fields: Any) -> TankState:
        """Set fields of a tank's state (unknown names raise ``TypeError``)."""
        state = self.tanks[unit_id]
        allowed = {f.name for f in dataclasses.fields(TankState)} - {"unit_id", "requests"}
        unknown = set(fields) - allowed
        if unknown:
            raise TypeError(f"unknown tank fields: {sorted(unknown)}")
        if "password" in fields and fields["password"] != state.password:
            # a changed password ends the user's sessions (as BMCs do)
            user = fields.get("username", state.username)
            self.sessions = {k: v for k, v in self.sessions.items() if v[1] != user}
        for name, value in fields.items():
            setattr(state, name, value)
        return state

    def set_leak(self, unit_id: str, detector: str, state: Any) -> None:
        self.tanks[unit_id].leak[detector] = state

    @property
    def url(self) -> str:
        if self._runner is None:
            raise RuntimeError("simulator not started")
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    # ---- server --------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[_failures])
        app.router.add_get(ROOT, self._root)
        app.router.add_get(UNITS, self._units)
        app.router.add_get(UNITS + "/{unit}", self._unit)
        app.router.add_get(UNITS + "/{unit}/PrimaryCoolantConnectors", self._connectors)
        app.router.add_get(UNITS + "/{unit}/PrimaryCoolantConnectors/{n}", self._connector)
        app.router.add_get(UNITS + "/{unit}/LeakDetection", self._leak_detection)
        app.router.add_get(UNITS + "/{unit}/LeakDetection/LeakDetectors", self._detectors)
        app.router.add_get(UNITS + "/{unit}/LeakDetection/LeakDetectors/{d}", self._detector)
        app.router.add_post(SESSIONS, self._login)
        app.router.add_delete(SESSIONS + "/{id}", self._logout)
        app.router.add_get("/_sim/tanks/{unit}", self._sim_get)
        app.router.add_patch("/_sim/tanks/{unit}", self._sim_patch)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        server = site._server
        assert server is not None
        sockets: list[Any] = list(getattr(server, "sockets", None) or [])
        self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> TankSimulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ---- handlers ------------------------------------------------------------------------
    @staticmethod
    def _json(doc: Any, status: int = 200) -> web.Response:
        return web.Response(text=_dumps(doc), status=status, content_type="application/json")

    async def _root(self, request: web.Request) -> web.Response:
        return self._json(
            {
                "@odata.id": ROOT,
                "Id": "RootService",
                "ThermalEquipment": {"@odata.id": f"{ROOT}/ThermalEquipment"},
            }
        )

    async def _units(self, request: web.Request) -> web.Response:
        return self._json(
            {
                "@odata.id": UNITS,
                "Members": [{"@odata.id": f"{UNITS}/{t}"} for t in sorted(self.tanks)],
                "Members@odata.count": len(self.tanks),
            }
        )

    async def _unit(self, request: web.Request) -> web.Response:
        state = await self._guarded(request)
        path = f"{UNITS}/{state.unit_id}"
        doc: dict[str, Any] = {
            "@odata.type": "#CoolingUnit.v1_1_0.CoolingUnit",
            "@odata.id": path,
            "Id": state.unit_id,
            "Name": f"Immersion unit {state.unit_id}",
            "EquipmentType": "ImmersionUnit",
            "CoolingCapacityWatts": state.capacity_watts,
            "Coolant": {
                "CoolantType": "Dielectric",
                "SpecificHeatkJoulesPerKgK": state.specific_heat,
            },
            "Status": {"State": "Enabled", "Health": state.health},
            "PrimaryCoolantConnectors": {"@odata.id": f"{path}/PrimaryCoolantConnectors"},
            "LeakDetection": {"@odata.id": f"{path}/LeakDetection"},
        }
        for prop in ("CoolingCapacityWatts", "Coolant", "Status"):
            if prop in state.missing:
                doc.pop(prop)
        return self._json(doc)

    async def _connectors(self, request: web.Request) -> web.Response:
        state = await self._guarded(request)
        path = f"{UNITS}/{state.unit_id}/PrimaryCoolantConnectors"
        return self._json(
            {"@odata.id": path, "Members": [{"@odata.id": f"{path}/{state.connector_id}"}]}
        )

    async def _connector(self, request: web.Request) -> web.Response:
        state = await self._guarded(request)
        if request.match_info["n"] != state.connector_id:
            raise web.HTTPNotFound(text="no such connector")
        unit_path = f"{UNITS}/{state.unit_id}"
        doc: dict[str, Any] = {
            "@odata.type": "#CoolantConnector.v1_0_0.CoolantConnector",
            "@odata.id": f"{unit_path}/PrimaryCoolantConnectors/{state.connector_id}",
            "Id": state.connector_id,
        }
        for prop, value in (
            ("SupplyTemperatureCelsius", state.supply_c),
            ("ReturnTemperatureCelsius", state.return_c),
            ("FlowLitersPerMinute", state.flow_lpm),
            ("HeatRemovedkW", state.heat_kw),
        ):
            excerpt = _sensor(state, prop, value, unit_path)
            if excerpt is not None:
                doc[prop] = excerpt
        return self._json(doc)

    async def _leak_detection(self, request: web.Request) -> web.Response:
        state = await self._guarded(request)
        path = f"{UNITS}/{state.unit_id}/LeakDetection"
        return self._json(
            {"@odata.id": path, "LeakDetectors": {"@odata.id": f"{path}/LeakDetectors"}}
        )

    async def _detectors(self, request: web.Request) -> web.Response:
        state = await self._guarded(request)
        if "LeakDetectors" in state.missing:
            raise web.HTTPNotFound(text="no leak detectors")
        path = f"{UNITS}/{state.unit_id}/LeakDetection/LeakDetectors"
        members: list[dict[str, Any]] = []
        for name, value in sorted(state.leak.items()):
            member: dict[str, Any] = {"@odata.id": f"{path}/{name}"}
            if state.inline_detectors:
                member.update({"Id": name, "DetectorState": value})
            members.append(member)
        return self._json(
            {"@odata.id": path, "Members": members, "Members@odata.count": len(members)}
        )

    async def _detector(self, request: web.Request) -> web.Response:
        state = await self._guarded(request)
        name = request.match_info["d"]
        if name not in state.leak:
            raise web.HTTPNotFound(text="no such detector")
        return self._json(
            {
                "@odata.type": "#LeakDetector.v1_0_0.LeakDetector",
                "Id": name,
                "Name": name,
                "LeakDetectorType": "FloatSwitch" if "float" in name.lower() else "Moisture",
                "DetectorState": state.leak[name],
            }
        )

    async def _login(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.text())
        except ValueError:
            return self._json({"error": "body is not JSON"}, status=400)
        user, password = body.get("UserName"), body.get("Password")
        if not any(
            t.username is not None and (t.username, t.password) == (user, password)
            for t in self.tanks.values()
        ):
            self.unauthorized += 1
            return self._json({"error": "bad credentials"}, status=401)
        self.session_logins += 1
        session_id, token = uuid.uuid4().hex[:8], secrets.token_hex(16)
        self.sessions[session_id] = (token, str(user))
        location = f"{SESSIONS}/{session_id}"
        return web.Response(
            status=201,
            text=_dumps({"@odata.id": location, "Id": session_id, "UserName": user}),
            content_type="application/json",
            headers={"X-Auth-Token": token, "Location": location},
        )

    async def _logout(self, request: web.Request) -> web.Response:
        if self.sessions.pop(request.match_info["id"], None) is None:
            raise web.HTTPNotFound()
        return web.Response(status=204)

    def _authorized(self, request: web.Request, state: TankState) -> bool:
        if state.username is None:
            return True
        token = request.headers.get("X-Auth-Token")
        if token is not None:
            return (token, state.username) in self.sessions.values()
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            pair = base64.b64decode(encoded, validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        return scheme == "Basic" and pair == f"{state.username}:{state.password}"

    async def _guarded(self, request: web.Request) -> TankState:
        unit = request.match_info["unit"]
        state = self.tanks.get(unit)
        if state is None:
            raise web.HTTPNotFound(text=f"no ImmersionUnit {unit!r}")
        if not self._authorized(request, state):
            self.unauthorized += 1
            raise _SimulatedFailure(401)
        state.requests += 1
        if state.delay_seconds:
            await asyncio.sleep(state.delay_seconds)
        if state.http_status != 200:
            raise _SimulatedFailure(state.http_status)
        return state

    async def _sim_get(self, request: web.Request) -> web.Response:
        state = self.tanks.get(request.match_info["unit"])
        if state is None:
            raise web.HTTPNotFound()
        return self._json(state.settable() | {"requests": state.requests})

    async def _sim_patch(self, request: web.Request) -> web.Response:
        unit = request.match_info["unit"]
        if unit not in self.tanks:
            self.add(unit)
        try:
            fields = json.loads(await request.text())
            if not isinstance(fields, dict):
                raise TypeError("expected a JSON object")
            self.set(unit, **fields)
        except (TypeError, ValueError) as error:
            return self._json({"error": str(error)}, status=400)
        return self._json(self.tanks[unit].settable())


class _SimulatedFailure(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@web.middleware
async def _failures(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except _SimulatedFailure as failure:
        return web.Response(status=failure.status, text=f"simulated HTTP {failure.status}")


class ThreadedTankSimulator:
    """:class:`TankSimulator` on its own event loop in a daemon thread (for sync tests)."""

    def __init__(
        self, tanks: Iterable[str], *, port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.sim = TankSimulator(tanks, port=port, ssl_context=ssl_context)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> TankSimulator:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.sim.start(), self._loop).result(10)
        return self.sim

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


async def _serve(tanks: Sequence[str], port: int) -> None:
    async with TankSimulator(tanks, port=port) as sim:
        print(json.dumps({"url": sim.url, "tanks": list(tanks)}), flush=True)
        await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m e2e.sim.tank", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--tanks", required=True, help="comma-separated ImmersionUnit ids")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    args = parser.parse_args(argv)
    tanks = [t.strip() for t in args.tanks.split(",") if t.strip()]
    if not tanks:
        parser.error("--tanks: at least one id")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(tanks, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
