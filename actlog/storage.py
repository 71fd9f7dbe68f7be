"""Where logs live: local directories, or remote stores through fsspec.

The writer, the reader and the dashboard all reach files through a
:class:`Storage`, so a log directory can be a local path or a URL:

- a local path: plain ``os`` calls; event files stay open for appending.
- ``memory://``, ``gs://``, ``s3://``, ... : `fsspec <https://filesystem-spec.readthedocs.io>`_
  (``gs://`` needs ``gcsfs``, ``s3://`` needs ``s3fs``). Stores that cannot
  append (object stores) get the whole file rewritten at each event, and a new
  file is started every :data:`REWRITE_LIMIT` bytes so that cost stays bounded.
- a scheme only TensorFlow knows (``ram://``, ``hdfs://`` through TensorFlow),
  when TensorFlow is already loaded: ``tf.io.gfile``. actlog never imports
  TensorFlow for this.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

REWRITE_LIMIT = 64 * 2**20
"""Size at which a file on a store that cannot append is closed and a new one started."""


def _pieces(data: bytes | Sequence[bytes]) -> Sequence[bytes]:
    return [data] if isinstance(data, (bytes, bytearray, memoryview)) else data


class Appender:
    """An event file being appended to."""

    path: str
    full = False
    """True when the file should not grow further (a store that rewrites it whole)."""

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

    def walk(self, top: str) -> Iterator[tuple[str, list[str]]]:
        """``(directory, file names)`` for ``top`` and every directory below it, sorted."""
        names = sorted(self.listdir(top))
        files, dirs = [], []
        for name in names:
            (dirs if self.isdir(self.join(top, name)) else files).append(name)
        yield top, files
        for name in dirs:
            yield from self.walk(self.join(top, name))


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
        self._content: bytearray | None = None  # set when the store cannot append
        fs.pipe_file(path, b"")

    def append(self, data: bytes | Sequence[bytes]) -> None:
        if self._content is None:
            try:
                with self.fs.open(self.path, "ab") as handle:
                    for piece in _pieces(data):
                        handle.write(piece)
                return
            except (NotImplementedError, ValueError):
                self._content = bytearray(self.fs.cat_file(self.path))
        for piece in _pieces(data):
            self._content += piece
        self.fs.pipe_file(self.path, bytes(self._content))
        self.full = len(self._content) >= REWRITE_LIMIT

    def lost(self) -> bool:
        try:
            return not self.fs.exists(self.path)
        except OSError:
            return True

    def close(self) -> None:
        self._content = None


class FsspecStorage(Storage):
    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def makedirs(self, path: str) -> None:
        self.fs.makedirs(path, exist_ok=True)

    def isdir(self, path: str) -> bool:
        return bool(self.fs.isdir(path))

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(path))

    def listdir(self, path: str) -> list[str]:
        return [entry.rstrip("/").rsplit("/", 1)[-1] for entry in self.fs.ls(path, detail=False)]

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

        return FsspecStorage(fsspec.filesystem(protocol))
    except ImportError as err:
        problem = str(err)
    except ValueError:
        problem = f"fsspec knows no protocol {protocol!r}"
    tf = sys.modules.get("tensorflow")
    if tf is not None and hasattr(tf, "io"):
        return GfileStorage(tf.io.gfile)
    raise ValueError(f"Cannot use log_dir {path!r}: {problem}. Accepted: {ACCEPTED}.")


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
    if not store.isdir(path):
        raise ValueError(f"log_dir {path!r} exists but is not a directory. Accepted: {ACCEPTED}.")
    return path, store
