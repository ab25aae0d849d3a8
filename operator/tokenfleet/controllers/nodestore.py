"""The operator's in-memory Nodes (pure): one compact :class:`NodeInfo` per tokenfleet Node.

Filled by :class:`~tokenfleet.controllers.nodewatch.NodeWatch` (its own list-and-watch of the
Nodes with the ``tokenfleet.io/role`` label, not a kopf index) and read through
:class:`~tokenfleet.controllers.fleet.FleetView`. It keeps the three groupings the readers use —
by name, vehicles by ``tokenfleet.io/pool``, racks by ``tokenfleet.io/tank`` — in the same
``key -> values`` shape a kopf index has, so :func:`~tokenfleet.controllers.nodes.select_nodes`
reads either.

:meth:`NodeStore.apply` is where an event that changes nothing the engine reads (a heartbeat, a
kubelet/kwok status field, an unrelated annotation) ends: the parsed record equals the one held,
and nothing is signalled.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from tokenfleet.telemetry.node import NodeInfo, NodeRole
from tokenfleet.telemetry.vehicle import POOL_LABEL, TANK_LABEL

__all__ = ["NodeChange", "NodeStore"]


@dataclass(frozen=True, slots=True)
class NodeChange:
    """One Node's parsed record changed: ``previous`` is ``None`` when it is new (first seen
    since start or since it was deleted), ``current`` is ``None`` when it is gone."""

    name: str
    previous: NodeInfo | None
    current: NodeInfo | None

    @property
    def first(self) -> bool:
        return self.previous is None

    @property
    def deleted(self) -> bool:
        return self.current is None


class _Single(Mapping[str, Iterable[NodeInfo]]):
    """``name -> (info,)``: the by-name grouping in a kopf index's shape, without copies."""

    __slots__ = ("_by_name",)

    def __init__(self, by_name: Mapping[str, NodeInfo]) -> None:
        self._by_name = by_name

    def __getitem__(self, key: str) -> Iterable[NodeInfo]:
        return (self._by_name[key],)

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)


class _Grouped(Mapping[str, Iterable[NodeInfo]]):
    """``group -> infos`` over ``group -> {name: info}``."""

    __slots__ = ("_groups",)

    def __init__(self, groups: Mapping[str, Mapping[str, NodeInfo]]) -> None:
        self._groups = groups

    def __getitem__(self, key: str) -> Iterable[NodeInfo]:
        return self._groups[key].values()

    def __iter__(self) -> Iterator[str]:
        return iter(self._groups)

    def __len__(self) -> int:
        return len(self._groups)


def _pool_of(info: NodeInfo) -> str | None:
    pool = (info.labels.get(POOL_LABEL) or "").strip()
    return pool if info.role is NodeRole.VEHICLE and pool else None


def _tank_of(info: NodeInfo) -> str | None:
    tank = (info.labels.get(TANK_LABEL) or "").strip()
    return tank if info.role is NodeRole.RACK and tank else None


class NodeStore:
    """The Nodes the operator knows, by name, pool and tank (module docstring).

    ``synced`` turns true with the first complete list: until then the fleet is not known, and
    nothing may plan or count on it as if it were empty.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, NodeInfo] = {}
        self._by_pool: dict[str, dict[str, NodeInfo]] = {}
        self._by_tank: dict[str, dict[str, NodeInfo]] = {}
        self.synced = False
        self.by_name: Mapping[str, Iterable[NodeInfo]] = _Single(self._by_name)
        self.by_pool: Mapping[str, Iterable[NodeInfo]] = _Grouped(self._by_pool)
        self.by_tank: Mapping[str, Iterable[NodeInfo]] = _Grouped(self._by_tank)

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, name: str) -> NodeInfo | None:
        return self._by_name.get(name)

    def infos(self) -> list[NodeInfo]:
        return list(self._by_name.values())

    @staticmethod
    def _group_del(groups: dict[str, dict[str, NodeInfo]], key: str | None, name: str) -> None:
        if key is None:
            return
        members = groups.get(key)
        if members is not None:
            members.pop(name, None)
            if not members:
                del groups[key]

    def _put(self, info: NodeInfo, previous: NodeInfo | None) -> None:
        if previous is not None:
            self._group_del(self._by_pool, _pool_of(previous), previous.name)
            self._group_del(self._by_tank, _tank_of(previous), previous.name)
        self._by_name[info.name] = info
        pool, tank = _pool_of(info), _tank_of(info)
        if pool is not None:
            self._by_pool.setdefault(pool, {})[info.name] = info
        if tank is not None:
            self._by_tank.setdefault(tank, {})[info.name] = info

    def apply(self, info: NodeInfo) -> NodeChange | None:
        """Hold ``info`` (an ADDED/MODIFIED Node, parsed). ``None`` when it equals the record
        already held: nothing the engine reads changed."""
        previous = self._by_name.get(info.name)
        if previous == info:
            return None
        self._put(info, previous)
        return NodeChange(info.name, previous, info)

    def remove(self, name: str) -> NodeChange | None:
        """Forget a deleted Node; ``None`` when it was not held."""
        previous = self._by_name.pop(name, None)
        if previous is None:
            return None
        self._group_del(self._by_pool, _pool_of(previous), name)
        self._group_del(self._by_tank, _tank_of(previous), name)
        return NodeChange(name, previous, None)

    def replace(self, infos: Iterable[NodeInfo]) -> list[NodeChange]:
        """Replace everything with a complete list (the first list, or a relist after the watch
        lost its place): the changes against what was held, gone Nodes included. Marks the
        store synced."""
        listed = {info.name: info for info in infos}
        changes = [c for c in map(self.apply, listed.values()) if c is not None]
        for name in [n for n in self._by_name if n not in listed]:
            gone = self.remove(name)
            if gone is not None:
                changes.append(gone)
        self.synced = True
        return changes
