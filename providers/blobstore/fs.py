"""``blobstore-fs``: containers are directories under ``root``, objects are files in them.

Object names may contain ``/`` (nested directories). Every path is checked before use: NUL
bytes, absolute names, ``..`` segments and symlinks that resolve outside ``root`` are refused
(``"… path traversal refused …"``). Writes go to a hidden temp file in the target directory
and are renamed into place, so a reader sees the old object or the new one, never half of it.
File system calls run in worker threads: the event loop never waits on a disk.

Config: ``root`` (required, an existing directory), ``timeout`` (seconds per operation).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..sdk import Link, Provider, ProviderContext, ProviderError
from .common import BlobError, BlobstoreService, parse_timeout

TEMP_PREFIX = ".trellis-tmp-"
"""Prefix of in-flight writes; such names are reserved and never listed."""


def _check_name(name: str, what: str) -> list[str]:
    """The path segments of a container or object name, or ``BlobError`` if unsafe."""
    if "\x00" in name:
        raise BlobError(f"{what} name {name!r} refused: it contains a NUL byte")
    if not name:
        raise BlobError(f"{what} name is empty")
    if name.startswith("/"):
        raise BlobError(f"{what} name {name!r}: path traversal refused (absolute path)")
    parts = name.split("/")
    if ".." in parts:
        raise BlobError(f"{what} name {name!r}: path traversal refused ('..' segment)")
    if any(p in ("", ".") for p in parts):
        raise BlobError(f"{what} name {name!r} is invalid: empty or '.' path segment")
    if any(p.startswith(TEMP_PREFIX) for p in parts):
        raise BlobError(f"{what} name {name!r} is invalid: {TEMP_PREFIX}* names are reserved")
    return parts


class FsBackend:
    """Blocking file system operations, each run through ``asyncio.to_thread``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.real_root = Path(os.path.realpath(root))

    # -- paths ------------------------------------------------------------------------------

    def _inside(self, path: Path) -> Path:
        """``path`` if, with every existing symlink resolved, it stays under the root."""
        real = Path(os.path.realpath(path))
        if real == self.real_root or not real.is_relative_to(self.real_root):
            raise BlobError(f"{path.relative_to(self.root)}: path traversal refused "
                            "(a symlink points outside the blobstore root)")
        return path

    def _container(self, name: str, *, must_exist: bool = True) -> Path:
        parts = _check_name(name, "container")
        if len(parts) != 1:
            raise BlobError(f"container name {name!r} is invalid: it may not contain '/'")
        path = self._inside(self.root / name)
        if must_exist and not path.is_dir():
            raise BlobError(f"container {name!r} does not exist")
        return path

    def _object(self, container: str, name: str) -> Path:
        parts = _check_name(name, "object")
        return self._inside(self._container(container).joinpath(*parts))

    def _missing(self, container: str, name: str) -> BlobError:
        return BlobError(f"object {name!r} not found in container {container!r}")

    # -- containers -------------------------------------------------------------------------

    def _create_container(self, name: str) -> None:
        try:
            self._container(name, must_exist=False).mkdir()
        except FileExistsError:
            raise BlobError(f"container {name!r} already exists") from None

    def _container_created_at(self, name: str) -> int:
        # No portable creation time on Linux: the directory's ctime stands in for it.
        return int(self._container(name).stat().st_ctime)

    def _delete_container(self, name: str) -> None:
        shutil.rmtree(self._container(name))

    def _container_exists(self, name: str) -> bool:
        return self._container(name, must_exist=False).is_dir()

    # -- objects ----------------------------------------------------------------------------

    def _read(self, container: str, name: str, start: int, stop: int) -> bytes:
        path = self._object(container, name)
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if start >= size:
                    return b""
                fh.seek(start)
                return fh.read(min(stop, size) - start)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise self._missing(container, name) from None

    def _write_file(self, path: Path, fill: Any) -> None:
        """Create ``path`` atomically: ``fill(file)`` writes a temp file that is renamed."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._inside(path.parent)  # re-check: the directories exist now
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as fh:
                fill(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _write(self, container: str, name: str, data: bytes) -> None:
        try:
            self._write_file(self._object(container, name), lambda fh: fh.write(data))
        except (IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
            raise BlobError(f"cannot write {name!r} in {container!r}: a directory is in the "
                            f"way ({exc.strerror})") from None

    def _list_objects(self, container: str) -> list[str]:
        base = self._container(container)
        names: list[str] = []
        for dirpath, _dirs, files in os.walk(base):
            for file in files:
                if file.startswith(TEMP_PREFIX):
                    continue
                path = Path(dirpath, file)
                real = Path(os.path.realpath(path))
                if real.is_relative_to(self.real_root) and real.is_file():
                    names.append(path.relative_to(base).as_posix())
        return sorted(names)

    def _prune(self, container: str, path: Path) -> None:
        """Remove directories left empty under the container, up from ``path``'s parent."""
        base = self._container(container)
        parent = path.parent
        while parent != base and parent.is_relative_to(base):
            try:
                parent.rmdir()
            except OSError:
                return
            parent = parent.parent

    def _delete_object(self, container: str, name: str) -> None:
        path = self._object(container, name)
        try:
            path.unlink()
        except FileNotFoundError:
            return  # deleting what is not there is not an error
        except (IsADirectoryError, PermissionError) as exc:
            if path.is_dir():  # a "directory" of names is not an object
                return
            raise BlobError(f"cannot delete {name!r}: {exc.strerror}") from None
        self._prune(container, path)

    def _has_object(self, container: str, name: str) -> bool:
        return self._object(container, name).is_file()

    def _object_info(self, container: str, name: str) -> tuple[int, int]:
        path = self._object(container, name)
        if not path.is_file():
            raise self._missing(container, name)
        st = path.stat()
        return int(st.st_mtime), st.st_size

    def _clear(self, container: str) -> None:
        for entry in self._container(container).iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def _copy_object(self, src: tuple[str, str], dest: tuple[str, str]) -> None:
        source, target = self._object(*src), self._object(*dest)
        if not source.is_file():
            raise self._missing(*src)

        def fill(fh: Any) -> None:
            with open(source, "rb") as rh:
                shutil.copyfileobj(rh, fh)
        self._write_file(target, fill)

    def _move_object(self, src: tuple[str, str], dest: tuple[str, str]) -> None:
        source, target = self._object(*src), self._object(*dest)
        if not source.is_file():
            raise self._missing(*src)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._inside(target.parent)
        os.replace(source, target)
        self._prune(src[0], source)

    # -- the async Backend surface ----------------------------------------------------------

    async def create_container(self, name: str) -> None:
        await asyncio.to_thread(self._create_container, name)

    async def container_created_at(self, name: str) -> int:
        return await asyncio.to_thread(self._container_created_at, name)

    async def delete_container(self, name: str) -> None:
        await asyncio.to_thread(self._delete_container, name)

    async def container_exists(self, name: str) -> bool:
        return await asyncio.to_thread(self._container_exists, name)

    async def read(self, container: str, name: str, start: int, stop: int) -> bytes:
        return await asyncio.to_thread(self._read, container, name, start, stop)

    async def write(self, container: str, name: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, container, name, data)

    async def list_objects(self, container: str) -> list[str]:
        return await asyncio.to_thread(self._list_objects, container)

    async def delete_object(self, container: str, name: str) -> None:
        await asyncio.to_thread(self._delete_object, container, name)

    async def has_object(self, container: str, name: str) -> bool:
        return await asyncio.to_thread(self._has_object, container, name)

    async def object_info(self, container: str, name: str) -> tuple[int, int]:
        return await asyncio.to_thread(self._object_info, container, name)

    async def clear(self, container: str) -> None:
        await asyncio.to_thread(self._clear, container)

    async def copy_object(self, src: tuple[str, str], dest: tuple[str, str]) -> None:
        await asyncio.to_thread(self._copy_object, src, dest)

    async def move_object(self, src: tuple[str, str], dest: tuple[str, str]) -> None:
        await asyncio.to_thread(self._move_object, src, dest)


class FsBlobstore(Provider):
    """``wasi:blobstore`` on a local directory (one per provider, shared by every link)."""

    name = "blobstore-fs"
    interfaces = ("wasi:blobstore/blobstore", "wasi:blobstore/container", "wasi:blobstore/types")

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.service: BlobstoreService | None = None

    async def start(self, context: ProviderContext) -> None:
        await super().start(context)
        raw = self.config.get("root")
        if not raw:
            raise ProviderError("blobstore-fs needs root=<directory>: set it in the provider's "
                                "config (the directory holding one subdirectory per container)")
        root = Path(raw).expanduser()
        if not root.is_dir():
            raise ProviderError(f"blobstore-fs root={raw!r} is not a directory: create it or "
                                "point root at an existing one")
        self.service = BlobstoreService(FsBackend(root.absolute()), parse_timeout(self.config))

    def implementation(self, interface: str, link: Link) -> BlobstoreService:
        if self.service is None:
            raise ProviderError("blobstore-fs is not started: call start() first")
        return self.service
