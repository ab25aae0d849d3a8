"""The digest of a variant: one SHA-256 over a Triton model directory.

``sha256`` of the manifest: one line ``<sha256 of the file>  <path>\n`` per regular file under
the model directory, paths relative to it with ``/`` separators, sorted by path (bytewise
UTF-8) — the output of ``cd <dir> && find . -type f | sed 's#^\\./##' | LC_ALL=C sort |
xargs sha256sum`` hashed once more. ``tokenfleet modelcache digest DIR`` prints it
(``--exclude model.sig`` leaves out a signature bundle written into the directory: the model
cache never places the bundle in the model directory).
Symlinks and special files are refused (a model directory holds plain files only).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

__all__ = ["DigestError", "file_sha256", "manifest", "manifest_digest", "tree_digest"]

_BLOCK: Final = 1 << 20


class DigestError(ValueError):
    """The directory cannot be digested (a symlink, a special file, an unreadable file)."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def manifest(entries: Iterable[tuple[str, str]]) -> bytes:
    """The manifest text of ``(relative path, file sha256)`` pairs (sorted here)."""
    rows = sorted(entries, key=lambda e: e[0].encode("utf-8"))
    return "".join(f"{sha}  {path}\n" for path, sha in rows).encode("utf-8")


def manifest_digest(entries: Iterable[tuple[str, str]]) -> str:
    return hashlib.sha256(manifest(entries)).hexdigest()


def tree_digest(root: Path, exclude: Iterable[str] = ()) -> str:
    """The variant digest of the directory ``root``, less the relative paths in ``exclude``."""
    skip = frozenset(exclude)
    root = Path(root)
    if not root.is_dir():
        raise DigestError(f"{root} is not a directory")
    entries: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in dirnames:
            if (base / name).is_symlink():
                raise DigestError(f"{base / name} is a symlink")
        for name in filenames:
            path = base / name
            if path.is_symlink() or not path.is_file():
                raise DigestError(f"{path} is not a regular file")
            rel = path.relative_to(root).as_posix()
            if rel not in skip:
                entries.append((rel, file_sha256(path)))
    return manifest_digest(entries)
