"""kvs: an embeddable key/value store, and a client for kvs-server.

>>> import kvs, tempfile
>>> with kvs.KvStore(tempfile.mkdtemp()) as db:
...     db["greeting"] = "hello"
...     db[b"greeting"]
b'hello'

Keys and values are ``bytes`` or ``str`` (encoded as UTF-8); values always come back as
``bytes``. A missing key raises ``KeyError``; other failures raise a ``kvs.KvsError``
subclass (see ``_kvs.pyi`` for the whole hierarchy).

``kvs.Client(addr)`` talks to a running ``kvs-server`` over one reused connection::

    with kvs.Client("127.0.0.1:4000") as client:
        client.set("k", "v")
        client.get("k")     # b"v"
        client.remove("k")
"""

from __future__ import annotations

from collections.abc import Iterator, KeysView, MutableMapping
from typing import Optional, Union

from . import _kvs
from ._kvs import (
    Batch,
    Client,
    CorruptionError,
    EngineMismatchError,
    ForkedError,
    KeyIterator,
    KvsError,
    KvsIOError,
    LockedError,
    ServerError,
    __version__,
)

__all__ = [
    "KvStore",
    "Batch",
    "KeyIterator",
    "Client",
    "KvsError",
    "CorruptionError",
    "KvsIOError",
    "LockedError",
    "EngineMismatchError",
    "ForkedError",
    "ServerError",
    "__version__",
]


class KvStore(_kvs.KvStore, MutableMapping[bytes, bytes]):
    """An open kvs data directory, as a ``MutableMapping`` of ``bytes`` to ``bytes``
    (``str`` keys and values are accepted too, encoded as UTF-8).

    ``KvStore(path, engine=None)`` opens (creating if needed) the directory ``path`` with
    ``engine`` (``"kvs"`` or ``"sled"``), or with the engine recorded there when ``engine``
    is None (``"kvs"`` for a new directory). Asking for the other engine than the recorded
    one raises ``EngineMismatchError``; a directory another process has open raises
    ``LockedError``.

    Keyword-only options tune the store: ``sync="always"`` (a write returns once it is on
    disk), ``read_only=True`` (open an existing store without writing anything; writes
    raise ``ValueError``), ``max_file_size`` and ``compaction_min_stale`` (bytes); see
    ``_kvs.pyi`` for each.

    Every write has reached the operating system when the call returns (it survives a crash
    of the process); ``flush()`` also forces it to disk. One store may be used from many
    threads; the GIL is released while the engine works. ``close()`` (or leaving a ``with``
    block) flushes and releases the directory; any later use raises ``ValueError``.

    A store belongs to the process that opened it: in a child made by ``fork()``
    (``multiprocessing`` with the "fork" start method, ``os.fork()``), any use of an
    inherited store raises ``ForkedError``; ``close()`` it there, and open the store again
    in the child once the parent has closed it, or in a fresh process (the "spawn" start
    method; always with the sled engine).
    """

    __slots__ = ()

    def keys(  # type: ignore[override]
        self,
        prefix: Optional[Union[bytes, str]] = None,
        match: Optional[Union[bytes, str]] = None,
    ) -> Union[KeysView[bytes], Iterator[bytes]]:
        """The keys. Without arguments, the mapping's ``KeysView`` (``len()``, ``in`` and
        set operations work; iterating it walks the store a page at a time). With
        ``prefix`` or ``match`` (a glob, Redis's rules), an iterator over the keys that pass,
        walked a page at a time (``scan_iter``): it never copies the whole key set."""
        if prefix is None and match is None:
            return KeysView(self)
        return self.scan_iter(prefix=prefix, match=match)

    def clear(self) -> None:
        """Removes every key (those set while this runs may stay)."""
        # MutableMapping.clear pops one item at a time, listing every key each time.
        for key in self:
            try:
                del self[key]
            except KeyError:  # removed meanwhile by another thread
                pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<kvs.KvStore {state} path={str(self.path)!r} engine={self.engine!r}>"
