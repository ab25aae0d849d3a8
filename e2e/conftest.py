"""e2e fixtures: a real local control plane (e2e/cluster/fleet.py) for the whole test session.

``fleet`` starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok in a temp
state dir with a simulated fleet (by default 200 vehicles in 2 pools, 16 rack nodes in 2 tanks;
override with E2E_VEHICLES / E2E_POOLS / E2E_RACKS / E2E_TANKS) and stops it after the session.
The binaries come from `make cluster-build` (.bin/); without them the fixture fails, it never
falls back to a mock.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.cluster.fleet import BIN_DIR, Fleet, FleetError
from e2e.objstore import ObjectStoreError, ObjectStoreServer, default_weed_binary


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """The session's running fleet (see e2e/README.md for its API)."""
    if not (BIN_DIR / "kcp").exists():
        pytest.fail(f"{BIN_DIR}/kcp missing: run `make cluster-build` (e2e/cluster/build.sh)")
    state_dir = tmp_path_factory.mktemp("fleet")
    fleet = Fleet(
        state_dir,
        vehicles=int(os.environ.get("E2E_VEHICLES", 200)),
        pools=int(os.environ.get("E2E_POOLS", 2)),
        racks=int(os.environ.get("E2E_RACKS", 16)),
        tanks=int(os.environ.get("E2E_TANKS", 2)),
        die_with_parent=True,
    )
    try:
        fleet.start()
    except FleetError as exc:
        pytest.fail(f"local control plane failed to start: {exc}")
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture
def namespace(fleet: Fleet) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (not waited for)."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    api = fleet.core_v1()
    api.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        api.delete_namespace(name)


@pytest.fixture(scope="session")
def objstore(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStoreServer]:
    """A real S3-compatible object store (SeaweedFS ``weed mini``) on 127.0.0.1 for the session,
    with random SigV4 credentials (``objstore.access_key``/``secret_key``, ``objstore.env()``,
    ``objstore.store_config()``). Built by `make objstore-build`; never a mock."""
    binary = default_weed_binary()
    if not binary.exists():
        pytest.fail(f"{binary} missing: run `make objstore-build` (e2e/objstore/build.sh)")
    store = ObjectStoreServer(tmp_path_factory.mktemp("objstore"), binary=binary)
    try:
        store.start()
    except ObjectStoreError as exc:
        pytest.fail(f"object store failed to start: {exc}")
    try:
        yield store
    finally:
        store.stop()
