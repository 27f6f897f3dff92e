"""kvs: an embeddable key/value store, and a client for kvs-server.

>>> import kvs, tempfile
>>> with kvs.KvStore(tempfile.mkdtemp()) as db:
...     db["greeting"] = "hello"
...     db[b"greeting"]
b'hello'

Keys and values are ``bytes`` or ``str`` (encoded as UTF-8); values always come back as
``bytes``. A missing key raises ``KeyError``; other failures raise a ``kvs.KvsError``
subclass (see ``_kvs.pyi`` for the whole hierarchy).
"""

from __future__ import annotations

from collections.abc import MutableMapping

from . import _kvs
from ._kvs import (
    CorruptionError,
    EngineMismatchError,
    KvsError,
    KvsIOError,
    LockedError,
    ServerError,
    __version__,
)

__all__ = [
    "KvStore",
    "KvsError",
    "CorruptionError",
    "KvsIOError",
    "LockedError",
    "EngineMismatchError",
    "ServerError",
    "__version__",
]


class KvStore(_kvs.KvStore, MutableMapping):
    """An open kvs data directory, as a ``MutableMapping`` of ``bytes`` to ``bytes``.

    ``KvStore(path, engine=None)`` opens (creating if needed) the directory ``path`` with
    ``engine`` (``"kvs"`` or ``"sled"``), or with the engine recorded there when ``engine``
    is None (``"kvs"`` for a new directory). Asking for the other engine than the recorded
    one raises ``EngineMismatchError``; a directory another process has open raises
    ``LockedError``.

    Every write has reached the operating system when the call returns (it survives a crash
    of the process); ``flush()`` also forces it to disk. One store may be used from many
    threads; the GIL is released while the engine works. ``close()`` (or leaving a ``with``
    block) flushes and releases the directory; any later use raises ``ValueError``.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<kvs.KvStore {state} path={str(self.path)!r} engine={self.engine!r}>"
