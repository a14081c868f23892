"""Artifact storage: uploaded files and adapter archives, addressed by a relative key.

``LocalArtifacts`` keeps them in a directory; an object store can implement ``Artifacts`` later.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO, Protocol


class Artifacts(Protocol):
    def put_file(self, key: str, src: Path) -> None: ...
    def open(self, key: str) -> BinaryIO: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def local_path(self, key: str) -> Path:
        """A local file holding the artifact (the trainer reads datasets from paths)."""
        ...


class LocalArtifacts:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"artifact key {key!r} leaves the artifact root")
        return path

    def put_file(self, key: str, src: Path) -> None:
        dst = self._path(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".part")
        try:
            shutil.copyfile(src, tmp)
            tmp.replace(dst)  # readers never see a half-written artifact
        except BaseException:  # a full disk leaves no half-written .part behind
            tmp.unlink(missing_ok=True)
            raise

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def local_path(self, key: str) -> Path:
        return self._path(key)


def put_directory_archive(store: Artifacts, key: str, directory: Path) -> None:
    """Store ``directory``'s files as a .tar.gz whose members sit at the top level."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "a.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for f in sorted(Path(directory).iterdir()):
                tar.add(f, arcname=f.name)
        store.put_file(key, archive)
