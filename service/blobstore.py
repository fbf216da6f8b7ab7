"""Where job inputs and results live: a blob store addressed by a URL (`Settings.blob_url`).

Redis keeps only job metadata and the queue; the bytes (uploads of up to `max_body_bytes`,
forecasts of hundreds of MB) would push it past `maxmemory` and stop every submit. Two backends:

- a local directory (a plain path or `file://`): the default, a shared volume in compose and
  Kubernetes. Written with temp file + fsync + `os.link`/`os.replace` + directory fsync, so a
  reader never sees half a blob and a crash leaves at most a temp file (swept later);
- any other fsspec URL (`memory://`, `s3://bucket/prefix`, ...): an object store, where a single
  PUT is atomic already. fsspec is imported only for these.

Keys are `<namespace>/<kind>/<job id>` (namespace = the Redis key prefix, so deployments and tests
sharing a folder never meet). Lifetimes are the job record's business (`result_expires_ms`); the
store only reclaims space: `sweep` deletes blobs older than their kind's TTL.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

CHUNK_BYTES = 1024 * 1024  # what a download stream reads at once
_TMP_PREFIX = ".tmp-"
_TMP_MAX_AGE_S = 3600  # a temp file this old is a crashed writer's


class BlobStore(ABC):
    """Bytes by key; `put_new` never replaces an existing blob (the first result wins)."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key` atomically (readers see all of it or nothing)."""

    @abstractmethod
    def put_new(self, key: str, data: bytes) -> bool:
        """Store `data` under `key` unless a blob is there already; True when this wrote it."""

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The blob, or None when absent."""

    @abstractmethod
    def open_chunks(self, key: str) -> Iterator[bytes] | None:
        """The blob as chunks of at most `CHUNK_BYTES` (for streaming), or None when absent.

        The blob is opened before this returns, so a later delete does not cut the stream."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the blob; absent is fine."""

    @abstractmethod
    def sweep(self, prefix: str, max_age_s: float) -> int:
        """Delete the blobs under `prefix` older than `max_age_s`; how many."""

    def exists(self, key: str) -> bool:
        chunks = self.open_chunks(key)
        if chunks is None:
            return False
        with contextlib.closing(chunks):  # type: ignore[arg-type]
            return True


class LocalBlobStore(BlobStore):
    """A directory on a local or shared (NFS, RWX volume) filesystem."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if any(part in ("", ".", "..") or part.startswith(_TMP_PREFIX) for part in parts):
            raise ValueError(f"invalid blob key {key!r}")
        return self.root.joinpath(*parts)

    def _write_temp(self, path: Path, data: bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return temp

    @staticmethod
    def _sync_dir(folder: Path) -> None:
        # the rename itself is durable only once the directory entry is
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        temp = self._write_temp(path, data)
        os.replace(temp, path)
        self._sync_dir(path.parent)

    def put_new(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        temp = self._write_temp(path, data)
        try:
            os.link(temp, path)  # atomic, and fails when the name exists: first writer wins
        except FileExistsError:
            return False
        finally:
            temp.unlink(missing_ok=True)
        self._sync_dir(path.parent)
        return True

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def open_chunks(self, key: str) -> Iterator[bytes] | None:
        try:
            handle = open(self._path(key), "rb")  # noqa: SIM115 - closed by the generator
        except FileNotFoundError:
            return None

        return _chunks(handle)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def sweep(self, prefix: str, max_age_s: float) -> int:
        folder = self._path(prefix)
        if not folder.is_dir():
            return 0
        now = time.time()
        removed = 0
        for entry in os.scandir(folder):
            limit = _TMP_MAX_AGE_S if entry.name.startswith(_TMP_PREFIX) else max_age_s
            try:
                if entry.is_file() and now - entry.stat().st_mtime > limit:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:  # another sweeper (worker) got there first
                continue
        return removed


class FsspecBlobStore(BlobStore):
    """Any fsspec filesystem URL: `memory://`, `s3://bucket/prefix`, `gcs://...`.

    Object stores make one PUT atomic, so no temp file; `put_new` checks then writes, which two
    racing writers can both pass; the two write the same forecast (same seed and input), so
    either copy is the result."""

    def __init__(self, url: str, **options: Any) -> None:
        import fsspec  # only for non-local URLs

        self.fs, root = fsspec.core.url_to_fs(url, **options)
        self.root = root.rstrip("/")

    def _path(self, key: str) -> str:
        if any(part in ("", ".", "..") for part in key.split("/")):
            raise ValueError(f"invalid blob key {key!r}")
        return f"{self.root}/{key}"

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(path, data)

    def put_new(self, key: str, data: bytes) -> bool:
        if self.fs.exists(self._path(key)):
            return False
        self.put(key, data)
        return True

    def get(self, key: str) -> bytes | None:
        try:
            return self.fs.cat_file(self._path(key))
        except FileNotFoundError:
            return None

    def open_chunks(self, key: str) -> Iterator[bytes] | None:
        try:
            handle = self.fs.open(self._path(key), "rb")
        except FileNotFoundError:
            return None

        return _chunks(handle)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(key))

    def sweep(self, prefix: str, max_age_s: float) -> int:
        try:
            entries = self.fs.ls(self._path(prefix), detail=True)
        except FileNotFoundError:
            return 0
        now = time.time()
        removed = 0
        for entry in entries:
            if entry.get("type") != "file":
                continue
            modified = _modified_s(self.fs, entry)
            if modified is not None and now - modified > max_age_s:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(entry["name"])
                    removed += 1
        return removed


def _modified_s(fs: Any, entry: dict[str, Any]) -> float | None:
    """Modification time [s since the epoch] of an fsspec listing entry, where the backend
    reports one (the field name differs between backends)."""
    for name in ("mtime", "LastModified", "created", "updated"):
        value = entry.get(name)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        with contextlib.suppress(TypeError, ValueError):
            return float(value)
    try:
        return float(fs.modified(entry["name"]).timestamp())
    except (NotImplementedError, AttributeError, FileNotFoundError):
        return None


def open_blob_store(url: str) -> BlobStore:
    """The blob store of `url`: a local directory for a path or `file://` URL, else fsspec."""
    if url.startswith("file://"):
        return LocalBlobStore(Path(url[len("file://") :]))
    if "://" not in url:
        return LocalBlobStore(Path(url).expanduser())
    return FsspecBlobStore(url)


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    """The rest of an open file in `CHUNK_BYTES` blocks; closes it when done or abandoned."""
    with handle:
        while block := handle.read(CHUNK_BYTES):
            yield block
