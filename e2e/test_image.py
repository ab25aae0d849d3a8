"""The operator image, really built (``image/build.sh``: debootstrap + buildah, no daemon, no
registry) and checked from its OCI archive: three layers in the order base / dependencies /
application, the OCI labels, a non-root user, no build-time CA left behind, its size, and a
smoke run of ``tokenfleet --version`` in a root filesystem unpacked from the archive alone.

The build is cached (``.cache/image``: the debootstrap root by its recipe, the dependency layer
by requirements.lock's hash, the app layer by the tracked sources), so after ``make image`` this
test takes seconds; cold it takes minutes (debootstrap and the PyPI downloads).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster.fleet import REPO

#: a cold build (no `make image` before) runs debootstrap and downloads the locked wheels
pytestmark = pytest.mark.timeout(3600)

BUILD = REPO / "image" / "build.sh"
SITE = "opt/tokenfleet/lib/python3.11/site-packages"
#: compressed layers, all three (measured: 49.9 + 111.9 + 0.8 = 162.6 MB; numpy and scipy are
#: most of the dependency layer)
MAX_IMAGE_MB = 200
MAX_APP_LAYER_MB = 5


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    missing = [t for t in ("debootstrap", "buildah") if shutil.which(t) is None]
    if missing or os.geteuid() != 0:
        pytest.fail(
            f"image build needs root and {', '.join(missing) or 'debootstrap, buildah'} "
            "(.ci/run installs them: apt-get install -y debootstrap buildah)"
        )
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        [str(BUILD)], cwd=REPO, env=env, capture_output=True, text=True, timeout=3000
    )
    assert proc.returncode == 0, f"image/build.sh failed:\n{proc.stdout[-3000:]}\n{proc.stderr}"
    summary: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\n[image] {json.dumps(summary)}")
    return summary


class Archive:
    """An OCI image layout in a tar (what ``buildah push oci-archive:`` writes)."""

    def __init__(self, path: Path) -> None:
        self.tar = tarfile.open(path)  # noqa: SIM115  (closed by the fixture)
        index = self.json("index.json")
        (entry,) = index["manifests"]
        self.ref = entry.get("annotations", {}).get("org.opencontainers.image.ref.name")
        self.manifest = self.blob_json(entry["digest"])
        self.config = self.blob_json(self.manifest["config"]["digest"])
        self.layers: list[dict[str, Any]] = self.manifest["layers"]

    def json(self, name: str) -> Any:
        f = self.tar.extractfile(name)
        assert f is not None, name
        return json.load(f)

    def blob(self, digest: str) -> bytes:
        algo, _, hexdigest = digest.partition(":")
        f = self.tar.extractfile(f"blobs/{algo}/{hexdigest}")
        assert f is not None, digest
        return f.read()

    def blob_json(self, digest: str) -> Any:
        return json.loads(self.blob(digest))

    def layer_names(self, layer: dict[str, Any]) -> set[str]:
        with tarfile.open(fileobj=io.BytesIO(self.blob(layer["digest"]))) as t:
            return {n.lstrip("./").rstrip("/") for n in t.getnames()}

    def unpack(self, root: Path) -> None:
        """Apply the layers in order (OCI whiteouts included) into ``root``."""
        for layer in self.layers:
            with tarfile.open(fileobj=io.BytesIO(self.blob(layer["digest"]))) as t:
                members = []
                for m in t.getmembers():
                    name = Path(m.name)
                    if name.name.startswith(".wh."):
                        gone = root / name.parent / name.name[len(".wh.") :]
                        if gone.is_dir() and not gone.is_symlink():
                            shutil.rmtree(gone)
                        elif gone.exists() or gone.is_symlink():
                            gone.unlink()
                        continue
                    if m.isdev():
                        continue
                    members.append(m)
                t.extractall(root, members=members, numeric_owner=True, filter="fully_trusted")


@pytest.fixture(scope="module")
def archive(built: dict[str, Any]) -> Iterator[Archive]:
    a = Archive(Path(built["archive"]))
    yield a
    a.tar.close()


def _version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def test_layers_are_base_then_dependencies_then_the_app(archive: Archive) -> None:
    assert len(archive.layers) == 3, [layer["digest"] for layer in archive.layers]
    base, deps, app = (archive.layer_names(layer) for layer in archive.layers)
    assert "usr/bin/python3.11" in base and "etc/passwd" in base
    assert not any(n.startswith("opt/tokenfleet") for n in base)
    # dependencies: the locked packages, not the operator
    assert f"{SITE}/kopf/__init__.py" in deps and f"{SITE}/scipy/__init__.py" in deps
    assert not any(n.startswith(f"{SITE}/tokenfleet") for n in deps)
    # application: the operator's own wheel, nothing else from PyPI
    assert f"{SITE}/tokenfleet/__init__.py" in app
    assert f"{SITE}/tokenfleet-{_version()}.dist-info/RECORD" in app
    assert not any(n.startswith((f"{SITE}/kopf", f"{SITE}/scipy")) for n in app)
    # the build-time CA bundle was bind-mounted, never stored; no lock file or wheel left over
    for names in (base, deps, app):
        assert not {"run/build-ca.pem", "tmp/requirements.lock"} & names
        assert not any(n.startswith("tmp/") and n.endswith(".whl") for n in names)
    history = [h.get("created_by", "") for h in archive.config["history"]]
    assert [h.split()[0] for h in history] == ["debootstrap", "pip", "pip"], history
    assert "requirements.lock" in history[1] and "tokenfleet" in history[2]


def test_labels_user_entrypoint(archive: Archive) -> None:
    revision = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    cfg = archive.config["config"]
    labels = cfg["Labels"]
    assert labels["org.opencontainers.image.version"] == _version()
    assert labels["org.opencontainers.image.revision"] in (revision, f"{revision}-dirty")
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert labels["org.opencontainers.image.title"] == "tokenfleet"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert cfg["User"] == "1000:1000"
    assert cfg["Entrypoint"] == ["tokenfleet"]
    assert cfg["Cmd"][0] == "run"
    assert archive.config["os"] == "linux" and archive.config["architecture"] == "amd64"
    assert archive.ref == f"tokenfleet:{_version()}"


def test_size(archive: Archive, built: dict[str, Any]) -> None:
    sizes = [int(layer["size"]) for layer in archive.layers]
    total_mb = sum(sizes) / 1e6
    print(
        f"\n[image] compressed layers {[round(s / 1e6, 1) for s in sizes]} MB, "
        f"total {total_mb:.1f} MB; archive {built['archive_bytes'] / 1e6:.1f} MB"
    )
    assert total_mb <= MAX_IMAGE_MB
    assert sizes[2] / 1e6 <= MAX_APP_LAYER_MB  # a code change ships only this


def test_smoke_run_from_the_archive(
    archive: Archive, built: dict[str, Any], tmp_path: Path
) -> None:
    """``tokenfleet --version`` as the image's user, in a root unpacked from the archive."""
    root = tmp_path / "rootfs"
    root.mkdir()
    archive.unpack(root)
    cfg = archive.config["config"]
    env = dict(e.split("=", 1) for e in cfg["Env"])
    proc = subprocess.run(
        ["chroot", f"--userspec={cfg['User']}", str(root), *cfg["Entrypoint"], "--version"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"tokenfleet {_version()}"
    assert built["smoke_version"] == proc.stdout.strip()  # buildah run said the same
    # the operator's modules import inside the image (the locked dependencies are complete)
    proc = subprocess.run(
        [
            "chroot",
            f"--userspec={cfg['User']}",
            str(root),
            "python",
            "-c",
            "import tokenfleet.controllers.main, tokenfleet.gateway.main; print('ok')",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_the_build_context_is_what_dockerignore_lets_in() -> None:
    """image/build.sh copies the same paths into its context as .dockerignore admits for a
    Dockerfile build (requirements.lock goes to the dependency layer on its own)."""
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    script = BUILD.read_text()
    line = next(x for x in script.splitlines() if x.startswith("CONTEXT_PATHS=("))
    context = set(line[len("CONTEXT_PATHS=(") : -1].split())
    assert context | {"requirements.lock"} == allowed
