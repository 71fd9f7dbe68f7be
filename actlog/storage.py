"""Where logs live: local directories, or remote stores through fsspec.

The writer, the reader and the dashboard all reach files through a
:class:`Storage`, so a log directory can be a local path or a URL:

- a local path: plain ``os`` calls; event files stay open for appending.
- ``memory://``, ``gs://``, ``s3://``, ... : `fsspec <https://filesystem-spec.readthedocs.io>`_
  (``gs://`` needs ``gcsfs``, ``s3://`` needs ``s3fs``). Object stores have no
  append and no directories: there :attr:`Storage.appends` is False, the
  writer puts each event as an object of its own (:meth:`Storage.put`), never
  rewriting one, and a prefix that holds no object yet is a fine log directory.
  Their clients get bounded timeouts and retries (:data:`CLIENT_DEFAULTS`)
  unless fsspec's configuration says otherwise, so a store that stops
  answering costs a logged event, not a stalled training.
- a scheme only TensorFlow knows (``ram://``, ``hdfs://`` through TensorFlow),
  when TensorFlow is already loaded: ``tf.io.gfile``. actlog never imports
  TensorFlow for this.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

APPENDING = ("file", "local", "memory")
"""fsspec protocols whose files can be appended to in place; every other one is written
an object at a time."""

CLIENT_DEFAULTS: dict[str, dict[str, Any]] = {
    # s3fs retries throttling and dropped connections itself (its ``retries`` attribute,
    # :data:`S3FS_RETRIES`) around botocore, which retries too: both kept small, so that
    # one request's worst case is under two minutes (2 x 2 tries of at most 25 s), not the
    # eight of the defaults multiplied (5 x 5 tries of up to 20 s).
    "s3": {"config_kwargs": {
        "connect_timeout": 5, "read_timeout": 20,
        "retries": {"max_attempts": 2, "mode": "standard"},
    }},
    "gs": {"requests_timeout": 20},  # gcsfs: seconds per HTTP request (it retries 6 times)
}
"""Client options per fsspec protocol, used where fsspec's configuration (``fsspec.config.conf``,
``FSSPEC_S3_*`` variables) sets none of its own."""
S3FS_RETRIES = 2
"""Tries s3fs makes of each request (its default: 5)."""
CLIENT_DEFAULTS.update(s3a=CLIENT_DEFAULTS["s3"], gcs=CLIENT_DEFAULTS["gs"])


def _pieces(data: bytes | Sequence[bytes]) -> Sequence[bytes]:
    return [data] if isinstance(data, (bytes, bytearray, memoryview)) else data


class Entry(NamedTuple):
    """One entry of a directory listing."""

    name: str
    directory: bool
    size: int


class Appender:
    """An event file being appended to."""

    path: str

    def append(self, data: bytes | Sequence[bytes]) -> None:
        """Add ``data`` (bytes, or pieces written in order) at the end and make it visible."""
        raise NotImplementedError

    def lost(self) -> bool:
        """True when the file (or its directory) disappeared since it was opened."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class Storage:
    """File operations on one kind of store. Paths are strings: local, or URLs."""

    appends = True
    """False for an object store: no append, no directories; events go in with :meth:`put`."""

    def join(self, directory: str, name: str) -> str:
        return directory.rstrip("/") + "/" + name

    def makedirs(self, path: str) -> None:
        raise NotImplementedError

    def isdir(self, path: str) -> bool:
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        raise NotImplementedError

    def listdir(self, path: str) -> list[str]:
        """Names (not paths) of the entries of directory ``path``."""
        raise NotImplementedError

    def size(self, path: str) -> int:
        raise NotImplementedError

    def read(self, path: str, start: int = 0, length: int | None = None) -> bytes:
        """``length`` bytes of ``path`` from offset ``start`` (default: to its current end)."""
        raise NotImplementedError

    def appender(self, path: str) -> Appender:
        """Create ``path`` (it must not exist) and return it open for appending."""
        raise NotImplementedError

    def put(self, path: str, data: bytes | Sequence[bytes]) -> None:
        """Write ``path`` whole, in one go (an object of an object store)."""
        raise NotImplementedError

    def entries(self, path: str) -> list[Entry]:
        """The entries of directory ``path``, with file sizes (one listing on an object store)."""
        entries = []
        for name in self.listdir(path):
            full = self.join(path, name)
            directory = self.isdir(full)
            entries.append(Entry(name, directory, 0 if directory else self.size(full)))
        return entries

    def walk(self, top: str) -> Iterator[tuple[str, dict[str, int]]]:
        """``(directory, {file name: size})`` for ``top`` and every directory below it, sorted."""
        entries = sorted(self.entries(top))
        yield top, {e.name: e.size for e in entries if not e.directory}
        for entry in entries:
            if entry.directory:
                yield from self.walk(self.join(top, entry.name))


# --------------------------------------------------------------------------- local


class _LocalAppender(Appender):
    def __init__(self, path: str) -> None:
        self.path = path
        # "x": exclusive creation, so two writers never share a file.
        self._file = open(path, "xb")  # noqa: SIM115 - kept open across events

    def append(self, data: bytes | Sequence[bytes]) -> None:
        self._file.writelines(_pieces(data))
        self._file.flush()

    def lost(self) -> bool:
        try:
            return os.fstat(self._file.fileno()).st_nlink == 0 or not os.path.exists(self.path)
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        self._file.close()


class LocalStorage(Storage):
    def join(self, directory: str, name: str) -> str:
        return os.path.join(directory, name)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def entries(self, path: str) -> list[Entry]:
        with os.scandir(path) as found:
            return [Entry(e.name, e.is_dir(), 0 if e.is_dir() else e.stat().st_size) for e in found]

    def size(self, path: str) -> int:
        return os.path.getsize(path)

    def read(self, path: str, start: int = 0, length: int | None = None) -> bytes:
        with open(path, "rb") as handle:
            handle.seek(start)
            return handle.read(-1 if length is None else length)

    def appender(self, path: str) -> Appender:
        return _LocalAppender(path)


# --------------------------------------------------------------------------- fsspec


class _FsspecAppender(Appender):
    def __init__(self, fs: Any, path: str) -> None:
        self.fs, self.path = fs, path
        fs.pipe_file(path, b"")

    def append(self, data: bytes | Sequence[bytes]) -> None:
        with self.fs.open(self.path, "ab") as handle:
            for piece in _pieces(data):
                handle.write(piece)

    def lost(self) -> bool:
        try:
            return not self.fs.exists(self.path)
        except OSError:
            return True

    def close(self) -> None:
        pass


class FsspecStorage(Storage):
    """A store served by fsspec. Listings are read fresh each time (s3fs and gcsfs cache
    them), so that a reader sees what a writer elsewhere added since."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs
        protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
        self.appends = bool(protocols & set(APPENDING))

    def makedirs(self, path: str) -> None:
        # On an object store this only makes sure the bucket is there: a prefix needs no creating.
        self.fs.makedirs(path, exist_ok=True)

    def isdir(self, path: str) -> bool:
        self.fs.invalidate_cache(path)
        return bool(self.fs.isdir(path))

    def exists(self, path: str) -> bool:
        self.fs.invalidate_cache(path)
        return bool(self.fs.exists(path))

    def listdir(self, path: str) -> list[str]:
        return [entry.name for entry in self.entries(path)]

    def entries(self, path: str) -> list[Entry]:
        from fsspec.core import strip_protocol

        self.fs.invalidate_cache(path)
        itself = strip_protocol(path).rstrip("/")  # an object store lists a file as itself
        return [
            Entry(
                info["name"].rstrip("/").rsplit("/", 1)[-1],
                info.get("type") == "directory",
                int(info.get("size") or 0),
            )
            for info in self.fs.ls(path, detail=True)
            if info["name"].rstrip("/") != itself
        ]

    def put(self, path: str, data: bytes | Sequence[bytes]) -> None:
        pieces = list(_pieces(data))
        self.fs.pipe_file(path, pieces[0] if len(pieces) == 1 else b"".join(pieces))

    def size(self, path: str) -> int:
        return int(self.fs.size(path))

    def read(self, path: str, start: int = 0, length: int | None = None) -> bytes:
        end = None if length is None else start + length
        return bytes(self.fs.cat_file(path, start=start or None, end=end))

    def appender(self, path: str) -> Appender:
        return _FsspecAppender(self.fs, path)


# --------------------------------------------------------------------------- tf.io.gfile


class _GfileAppender(Appender):
    def __init__(self, gfile: Any, path: str) -> None:
        self.gfile, self.path = gfile, path
        self._file = gfile.GFile(path, "wb")

    def append(self, data: bytes | Sequence[bytes]) -> None:
        for piece in _pieces(data):
            self._file.write(piece)
        self._file.flush()

    def lost(self) -> bool:
        try:
            return not self.gfile.exists(self.path)
        except Exception:  # noqa: BLE001 - tf.errors.OpError and friends
            return True

    def close(self) -> None:
        self._file.close()


class GfileStorage(Storage):
    """``tf.io.gfile``, its errors turned into ``OSError`` (``FileNotFoundError`` for a
    missing path) so that callers treat every store alike."""

    def __init__(self, gfile: Any) -> None:
        self.gfile = gfile

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self.gfile, name)(*args)
        except OSError:
            raise
        except Exception as err:  # tf.errors.OpError and its kinds
            if type(err).__name__ == "NotFoundError":
                raise FileNotFoundError(str(err)) from err
            raise OSError(str(err)) from err

    def makedirs(self, path: str) -> None:
        self._call("makedirs", path)

    def isdir(self, path: str) -> bool:
        return bool(self._call("isdir", path))

    def exists(self, path: str) -> bool:
        return bool(self._call("exists", path))

    def listdir(self, path: str) -> list[str]:
        return [name.rstrip("/") for name in self._call("listdir", path)]

    def size(self, path: str) -> int:
        return int(self._call("stat", path).length)

    def read(self, path: str, start: int = 0, length: int | None = None) -> bytes:
        with self._call("GFile", path, "rb") as handle:
            handle.seek(start)
            return handle.read(-1 if length is None else length)

    def appender(self, path: str) -> Appender:
        return _GfileAppender(self.gfile, path)


# --------------------------------------------------------------------------- choice

ACCEPTED = (
    "a local directory, or a URL that fsspec serves (memory://, gs:// with gcsfs, s3:// with "
    "s3fs, ...) or, when TensorFlow is loaded, that tf.io.gfile serves (ram://, ...)"
)


def is_url(path: str) -> bool:
    return "://" in path


def for_path(path: str) -> Storage:
    """The :class:`Storage` that serves ``path``; ``ValueError`` naming what is accepted."""
    if not is_url(path):
        return LocalStorage()
    protocol = path.split("://", 1)[0]
    problem = ""
    try:
        import fsspec

        fs = fsspec.filesystem(protocol, **_client_options(protocol))
        if protocol in ("s3", "s3a"):
            fs.retries = S3FS_RETRIES  # an instance of actlog's own: its options are actlog's
        return FsspecStorage(fs)
    except ImportError as err:
        problem = str(err)
    except ValueError:
        problem = f"fsspec knows no protocol {protocol!r}"
    tf = sys.modules.get("tensorflow")
    if tf is not None and hasattr(tf, "io"):
        return GfileStorage(tf.io.gfile)
    raise ValueError(f"Cannot use log_dir {path!r}: {problem}. Accepted: {ACCEPTED}.")


def _client_options(protocol: str) -> dict[str, Any]:
    """:data:`CLIENT_DEFAULTS` for ``protocol``, under whatever fsspec's configuration sets."""
    import fsspec.config

    defaults = CLIENT_DEFAULTS.get(protocol, {})
    configured = fsspec.config.conf.get(protocol, {})
    options = {}
    for key, value in defaults.items():
        if isinstance(value, dict):
            options[key] = {**value, **configured.get(key, {})}
        elif key not in configured:
            options[key] = value
    return options


def check_log_dir(log_dir: Any) -> tuple[str, Storage]:
    """``log_dir`` as a path and its store, created; errors name what is accepted."""
    if not isinstance(log_dir, (str, os.PathLike)) or not os.fspath(log_dir):
        raise TypeError(
            f"log_dir must be a non-empty path (str or os.PathLike); received {log_dir!r}."
        )
    path = os.fspath(log_dir)
    store = for_path(path)
    try:
        store.makedirs(path)
    except Exception as err:  # noqa: BLE001 - OSError, or a remote store's own errors
        detail = getattr(err, "strerror", None) or getattr(err, "message", None) or err
        raise ValueError(
            f"log_dir {path!r} cannot be created: {detail}. Accepted: {ACCEPTED}."
        ) from None
    # An object store has no directories: a prefix that holds nothing yet is fine there,
    # a key that is an object is not.
    if not store.isdir(path) and (store.appends or store.exists(path)):
        raise ValueError(f"log_dir {path!r} exists but is not a directory. Accepted: {ACCEPTED}.")
    return path, store
