"""Type stubs and reference for kvs's compiled core, ``kvs._kvs``.

Import from ``kvs``, not from here: ``kvs.KvStore`` is this module's ``KvStore`` with the
``collections.abc.MutableMapping`` mixins (``items``, ``values``, ``pop``, ``popitem``,
``setdefault``, ``update``, ``clear``, ``==``) added, and ``keys(prefix=None, match=None)``:
the mapping's ``KeysView`` without arguments, else an iterator over the keys that start
with ``prefix`` and match the glob ``match`` (see ``KvStore.scan``).

Keys and values
    ``bytes``, or ``str`` (encoded as UTF-8; a ``str`` that cannot be encoded raises
    ``UnicodeEncodeError``). Anything else, ``bytearray`` and ``memoryview`` included,
    raises ``TypeError``: those are mutable, and kvs reads them with the GIL released.
    Values always come back as ``bytes``. Keys may be up to 1 MiB and values up to
    512 MiB; larger ones raise ``ValueError``.

Exceptions
    Exception
    └── KvsError               anything kvs reports that has no closer class below
        ├── CorruptionError    data on disk failed its checksum or is malformed
        ├── KvsIOError         the operating system failed an I/O (also an OSError)
        ├── LockedError        another process or handle has the directory open
        ├── EngineMismatchError  the directory holds the other engine's data
        ├── ForkedError        the store or client was opened by the parent process
        └── ServerError        the server reported an error or broke the protocol

    and builtin ones: ``KeyError`` for a missing key (carrying the key as given),
    ``TypeError`` for a key or value of another type, ``ValueError`` for a bad argument
    (unknown engine name, key or value over the size limit) and for any use of a closed
    ``KvStore`` or ``Client``, ``ConnectionError`` (or a subclass:
    ``ConnectionRefusedError``, ``ConnectionResetError``, ``BrokenPipeError``...) when a
    server cannot be reached or drops the connection, ``TimeoutError`` when it does not
    answer within the client's timeout.

Threads
    A ``KvStore`` or ``Client`` may be shared between threads. The GIL is released while
    the engine or the network works, so other Python threads keep running.

Processes and fork()
    A ``KvStore`` or ``Client`` belongs to the process that opened it. In a child made by
    ``fork()`` (``multiprocessing`` with the "fork" start method, the default on Linux
    before Python 3.14, or ``os.fork()``), any use of an inherited one raises
    ``ForkedError`` and touches nothing: the parent's store is unharmed. ``close()`` of an
    inherited store is safe and releases only the child's copy. To use the store in a child,
    open it there after the parent has closed it (one process at a time may have a
    directory open), or in a fresh process (the "spawn" or "forkserver" start method). With
    the sled engine a forked child cannot open any store at all once its parent has used
    sled (sled's background threads do not survive fork()): that open raises
    ``ForkedError`` too; use a fresh process.

Files
    Other programs must not truncate or rewrite a store's log files while it is open: kvs
    maps them into memory, and a file shrunk under the map kills the process with SIGBUS
    on the next read. If a directory's ``engine`` file is lost, kvs tells the engine from
    the data files present: asking for the other engine raises ``EngineMismatchError``.
"""

import datetime
import os
import pathlib
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Literal, Optional, TypeVar, Union, final, overload

from typing_extensions import Self

_Bytes = Union[bytes, str]
_Seconds = Union[int, float, datetime.timedelta]
_T = TypeVar("_T")

__all__ = [
    "Batch",
    "Client",
    "CorruptionError",
    "EngineMismatchError",
    "ForkedError",
    "KeyIterator",
    "KvStore",
    "KvsError",
    "KvsIOError",
    "LockedError",
    "ServerError",
    "__version__",
]

__version__: str
"""The version of kvs, the same as ``kvs-server -V`` prints."""

class KvsError(Exception):
    """Base class of the errors kvs raises besides the builtin ones listed above."""

class CorruptionError(KvsError):
    """Data on disk failed its checksum or is malformed. The message names the file and
    the byte offset. Nothing has been deleted."""

class KvsIOError(KvsError, OSError):
    """The operating system failed an I/O operation of kvs (disk full, permission denied).
    ``errno`` and ``filename`` are set when known."""

class LockedError(KvsError):
    """Another process, or another open ``KvStore`` of this process, holds the directory."""

class EngineMismatchError(KvsError):
    """The directory was written by another engine than the one asked for. Nothing was
    touched."""

class ForkedError(KvsError):
    """The store or client was opened by another process, of which this one is a child made
    by ``fork()``. Nothing was read or written. Open the store again in this process once
    the parent has closed it, or in a fresh process (see "Processes and fork()" above)."""

class ServerError(KvsError):
    """A kvs server reported an error, or its reply broke the protocol."""

class KvStore:
    """An open kvs data directory.

    ``KvStore(path, engine=None)`` opens, creating it if needed, the directory ``path``
    with ``engine`` (``"kvs"`` or ``"sled"``), or with the engine recorded there when
    ``engine`` is None (``"kvs"`` for a new directory). The engine is recorded in the
    directory on first open.

    Raises ``ValueError`` for an unknown engine name, ``EngineMismatchError`` if the
    directory holds the other engine's data, ``LockedError`` if another process (or
    another ``KvStore`` of this process) has it open, ``CorruptionError`` if its data is
    damaged, ``KvsIOError`` if it cannot be read or created.

    Every write has reached the operating system when the call returns: it survives a
    crash of the process. ``flush()`` also forces it onto the disk.

    Keyword-only options (None: the default; a value of the wrong type raises
    ``TypeError``, one out of range ``ValueError``, before anything is opened):

    - ``sync``: ``"os"`` (the default: a write returns once it is in the operating
      system) or ``"always"`` (once it is on disk, ``fdatasync``: it also survives a power
      loss; much slower).
    - ``read_only``: ``True`` opens an existing store without writing anything to its
      directory (it may be on read-only media): writes raise ``ValueError``, ``flush()``
      does nothing. Any number of read-only stores, in any processes, may be open on one
      directory; a writer is kept out while one is (``LockedError``), and the reverse. A
      torn end of the log left by a crash is left in place, the records before it served.
      A missing directory, or one without a kvs store, raises ``KvsIOError``; the sled
      engine cannot open a store read-only (``ValueError``). Nobody may write the log while
      it is open read-only.
    - ``max_file_size``: the size in bytes at which writes move on to a new log file, from
      4096 to 2**30 (the default).
    - ``compaction_min_stale``: background compaction starts once at least this many bytes
      of the log are stale (overwritten or removed) and they are at least half of it
      (default 4 MiB).

    The options other than ``read_only`` are for the kvs engine; sled ignores them.
    """

    def __new__(
        cls,
        path: Union[str, os.PathLike[str]],
        engine: Optional[str] = None,
        *,
        sync: Optional[Literal["os", "always"]] = None,
        read_only: Optional[bool] = None,
        max_file_size: Optional[int] = None,
        compaction_min_stale: Optional[int] = None,
    ) -> Self: ...
    def __getitem__(self, key: _Bytes, /) -> bytes:
        """The value of ``key``; ``KeyError`` if it is not set."""
    def __setitem__(self, key: _Bytes, value: _Bytes, /) -> None:
        """Sets ``key`` to ``value``."""
    def __delitem__(self, key: _Bytes, /) -> None:
        """Removes ``key``; ``KeyError`` if it is not set."""
    def __contains__(self, key: object, /) -> bool:
        """Whether ``key`` is set (``TypeError`` if it is not bytes or str)."""
    def __len__(self) -> int:
        """The number of keys."""
    def __iter__(self) -> KeyIterator:
        """The keys, in no particular order, walked a page of ``scan`` at a time (the store
        never copies its whole key set). Changing the store while iterating is safe; every
        key set for the whole walk comes out, a key set or removed meanwhile may or may not,
        and a key may come out twice when the store changes during the walk (the
        guarantees of Redis's ``SCAN``)."""
    @overload
    def get(self, key: _Bytes) -> Optional[bytes]:
        """The value of ``key``, or None if it is not set."""
    @overload
    def get(self, key: _Bytes, default: _T) -> Union[bytes, _T]:
        """The value of ``key``, or ``default`` if it is not set."""
    def set(self, key: _Bytes, value: _Bytes, ttl: Optional[_Seconds] = None) -> None:
        """Sets ``key`` to ``value`` (same as ``db[key] = value`` without ``ttl``).

        ``ttl``: the key expires that many seconds from now (``int``, ``float`` or
        ``datetime.timedelta``, kept to the millisecond, rounded up); from then on it is gone
        for every read, as if removed. None (the default) means never, and clears any
        deadline the key had, as Redis's ``SET`` does. A ``ttl`` that is not positive raises
        ``ValueError`` (redis-server refuses ``SET ... EX 0`` the same way), as does NaN or
        an infinity; another type (``bool`` included) raises ``TypeError``."""
    def expire(self, key: _Bytes, seconds: _Seconds) -> bool:
        """Gives ``key`` a deadline ``seconds`` from now, keeping its value; returns whether
        the key was set (False: nothing is written). Zero or fewer seconds remove the key
        and return True, as Redis's ``EXPIRE`` does. NaN or an infinity raises
        ``ValueError``."""
    def ttl(self, key: _Bytes) -> Optional[float]:
        """Seconds left before ``key`` expires (to the millisecond), or None if it has no
        deadline; ``KeyError`` if it is not set (or has expired). Unlike redis-py's ``ttl``,
        which answers -1 and -2."""
    def persist(self, key: _Bytes) -> bool:
        """Removes the deadline of ``key``, keeping its value; returns whether it had one
        (False for a key without a deadline, or not set: nothing is written)."""
    def get_many(self, keys: Iterable[_Bytes]) -> list[Optional[bytes]]:
        """The values of ``keys``, in order (None for a key not set), all read at one
        instant: no write (nor batch) lands between two of the reads. A single ``bytes`` or
        ``str`` raises ``TypeError`` (it would be read as an iterable of one-letter
        keys)."""
    def scan(
        self,
        cursor: int = 0,
        count: int = 100,
        prefix: Optional[_Bytes] = None,
        match: Optional[_Bytes] = None,
    ) -> tuple[int, list[bytes]]:
        """One page of a walk over the keys, as Redis's ``SCAN``: returns ``(cursor,
        keys)``. Start with ``cursor`` 0 and pass each returned cursor to the next call,
        until it is 0 again::

            cursor = 0
            while True:
                cursor, keys = db.scan(cursor, match="user:*")
                ...
                if cursor == 0:
                    break

        Only keys starting with ``prefix`` and matching the glob ``match`` (Redis's rules:
        ``*``, ``?``, ``[abc]``, ``[^a-z]``, ``\\`` escapes; bytes for bytes, case
        matters) come back. ``count`` is the work per call (how many keys are looked at),
        so a page may hold fewer keys, even none, before the walk is over: only a cursor of
        0 ends it. Every key set for the whole walk comes back at least once (maybe more
        than once); a key set or removed during the walk may or may not. A ``count`` below
        1 raises ``ValueError``; a cursor this store did not return raises ``ValueError``
        (or walks from somewhere in the store, where the engine cannot tell)."""
    def scan_iter(
        self,
        prefix: Optional[_Bytes] = None,
        match: Optional[_Bytes] = None,
        count: int = 100,
    ) -> KeyIterator:
        """The keys that start with ``prefix`` and match ``match``, walked with ``scan``
        pages of ``count`` (as redis-py's ``scan_iter``): one page is in memory at a time.
        The guarantees are ``scan``'s."""
    def batch(self) -> Batch:
        """A new, empty batch of writes to this store, applied all at once (see
        ``Batch``)::

            with db.batch() as b:
                b["from"] = "7"
                b["to"] = "3"
                del b["pending"]
        """
    def flush(self) -> None:
        """Forces every write so far onto stable storage (fsync)."""
    def close(self) -> None:
        """Flushes and releases the store; the directory may be reopened right away.
        Closing a closed store does nothing; any other use of it raises ``ValueError``.
        Closing a store inherited through ``fork()`` releases only this process's copy.
        """
    @property
    def closed(self) -> bool:
        """Whether ``close()`` has been called."""
    @property
    def engine(self) -> str:
        """The engine of the store: ``"kvs"`` or ``"sled"``."""
    @property
    def path(self) -> pathlib.Path:
        """The data directory."""
    @property
    def read_only(self) -> bool:
        """Whether the store was opened with ``read_only=True``."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool:
        """Closes the store (see ``close()``)."""
    def compare_and_set(
        self, key: _Bytes, expected: Optional[_Bytes], new: Optional[_Bytes]
    ) -> bool:
        """Atomically: if the value of ``key`` is ``expected`` (None: the key is not set),
        sets it to ``new`` (None: removes it) and returns True; otherwise changes nothing
        and returns False. ``b""`` is a value, not absence.

        Atomic against every other write of ``key`` through this store, from any thread. A
        True is acknowledged as ``set`` is (the write has reached the operating system); a
        False writes nothing. The GIL is released while the engine works. To increment a
        counter::

            while True:
                old = db.get("n")
                if db.compare_and_set("n", old, str(int(old or 0) + 1)):
                    break
        """
    def update_value(
        self, key: _Bytes, func: Callable[[Optional[bytes]], Optional[_Bytes]]
    ) -> Optional[bytes]:
        """Atomically replaces the value of ``key`` with ``func(old)`` (``old`` is None if
        the key is not set; ``func`` returning None removes it) and returns the new value,
        as ``bytes``, or None.

        A loop over ``get`` and ``compare_and_set``: ``func`` is called with no lock of kvs
        held (the GIL is, as for any Python code), so it may use the store, and it is called
        **again** whenever another write changed the key in between: it must not count on
        running once. An exception from ``func`` propagates and nothing is written. (Not
        named ``update``: that is ``MutableMapping.update``.)
        """
    def checkpoint(self, dest: Union[str, os.PathLike[str]]) -> None:
        """Writes an online checkpoint of the store into the directory ``dest``: a
        consistent copy holding exactly the writes acknowledged before one point in time
        during the call, taken while other threads go on using the store (the GIL is
        released). ``dest`` must not exist, or be an empty directory; anything else raises
        ``KvsIOError`` and touches nothing. ``dest`` then opens with ``KvStore(dest)`` as a
        store of the same engine, independent of this one. With the ``"kvs"`` engine writers
        wait only a moment; with ``"sled"`` they wait for the whole copy.
        """

@final
class KeyIterator(Iterator[bytes]):
    """The keys of a ``KvStore`` or of a ``Client``'s server, walked a page of ``scan`` at a
    time (from ``iter(db)``, ``db.scan_iter()`` and ``db.keys(prefix=..., match=...)``, and
    the same on a client), holding one page of keys at a time. It keeps the store's (or
    client's) object alive; once it is closed, the ``next()`` that needs a new page raises
    ``ValueError``. Errors of the store while reading a page raise
    from ``next()`` as from any other call; calling ``next()`` again retries that page."""

    def __iter__(self) -> Self: ...
    def __next__(self) -> bytes: ...

@final
class Batch:
    """Writes to one ``KvStore`` gathered and then applied all at once, from
    ``db.batch()``: sets (with or without a time to live) and removals, over any keys.

    Applied by ``commit()``, or by leaving a ``with`` block normally; leaving the block by
    an exception throws the batch away instead (the exception goes on)::

        with db.batch() as b:
            b["balance:alice"] = "70"
            b["balance:bob"] = "30"
            b.set("session", token, ttl=3600)
            del b["pending"]

    Applying is atomic: every operation lands, or none (also across a crash of the
    process, on reopening), and other readers see the store before the batch or after it,
    never in between. Operations apply in the order they were added: a key written twice
    ends with the later write. Removing a key that is not set is not an error in a batch.
    Keys and values are checked for type when added (``TypeError``) and for size when
    applied (``ValueError``, and nothing is written), as is the whole batch (with the kvs
    engine, a batch of several operations takes at most 64 MiB of records).

    Once committed or discarded, a batch is done: adding to it, or committing it again,
    raises ``ValueError``. A ``commit()`` that fails writes nothing and leaves the batch
    open, as it was, so it can be committed again. A batch may be filled from several
    threads; its operations are kept in memory until it is applied.
    """

    def __setitem__(self, key: _Bytes, value: _Bytes, /) -> None:
        """Adds a set of ``key`` to ``value``, without a deadline (it clears any deadline
        the key has)."""
    def __delitem__(self, key: _Bytes, /) -> None:
        """Adds a removal of ``key`` (a key that is not set is left so, without error)."""
    def set(self, key: _Bytes, value: _Bytes, ttl: Optional[_Seconds] = None) -> None:
        """Adds a set of ``key`` to ``value``; ``ttl`` as in ``KvStore.set``, counted from
        this call (not from the commit)."""
    def remove(self, key: _Bytes) -> None:
        """Adds a removal of ``key``, as ``del b[key]``."""
    def __len__(self) -> int:
        """How many operations the batch holds (0 once it is done)."""
    def commit(self) -> None:
        """Applies every operation, all or none, and makes the batch done. The GIL is
        released while the store writes. On failure nothing is written, the exception is
        raised, and the batch stays open."""
    def discard(self) -> None:
        """Throws the operations away and makes the batch done; nothing was written.
        Discarding a discarded batch does nothing; discarding a committed one raises
        ``ValueError``."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool:
        """Commits the batch if the block ended normally, discards it if it raised; returns
        False (an exception goes on). A batch the block committed or discarded itself is
        left as it is."""

@final
class Client:
    """A client of a kvs server, over one TCP connection reused for every request.

    ``Client(addr="127.0.0.1:4000", *, timeout=10.0, password=None)`` connects at once to
    ``addr`` (``"IP:PORT"``, ``"[IPv6]:PORT"`` or ``"host:port"``). ``timeout`` is how many
    seconds connecting, and each send or receive of a request, may wait; None waits forever.
    ``password`` (str or bytes) is given to a server started with a password
    (``kvs-server --requirepass``), at once and again whenever the client connects again; a
    wrong one raises ``ValueError``, as does any request to such a server without one.

    Raises ``ConnectionError`` (``ConnectionRefusedError`` when refused) if the server
    cannot be reached; the message names the address. During a request: ``TimeoutError``
    when the server does not answer within ``timeout``, ``ConnectionError`` (or a subclass)
    when the connection breaks; the request may or may not have been carried out, and the
    next request connects again. Errors the server reports map as for ``KvStore``
    (``KeyError``, ``ValueError``, ``KvsIOError``, ``CorruptionError``), anything else is a
    ``ServerError``.

    Safe to share between threads: their requests take turns on the connection. The GIL is
    released while waiting on the network.
    """

    def __new__(
        cls,
        addr: str = "127.0.0.1:4000",
        *,
        timeout: Optional[float] = 10.0,
        password: Optional[_Bytes] = None,
    ) -> Self: ...
    def get(self, key: _Bytes) -> Optional[bytes]:
        """The value of ``key``, or None if it is not set."""
    def set(self, key: _Bytes, value: _Bytes, ttl: Optional[_Seconds] = None) -> None:
        """Sets ``key`` to ``value``; the server has written it when this returns. With a
        ``ttl`` (seconds, ``int``, ``float`` or ``datetime.timedelta``, more than 0), the key
        expires that long from now, as ``KvStore.set``; without one, any deadline it had is
        cleared. Deadlines are kept on the server's clock."""
    def expire(self, key: _Bytes, seconds: _Seconds) -> bool:
        """Gives the existing ``key`` a deadline ``seconds`` from now, keeping its value;
        whether the key was set (False: nothing is written). Zero or fewer seconds remove
        the key (and answer True), as Redis's ``EXPIRE``."""
    def ttl(self, key: _Bytes) -> Optional[float]:
        """Seconds left before ``key`` expires; None when it has no deadline; ``KeyError``
        when it is not set (or has expired)."""
    def persist(self, key: _Bytes) -> bool:
        """Removes the deadline of ``key``; whether it had one."""
    def get_many(self, keys: Iterable[_Bytes]) -> list[Optional[bytes]]:
        """The values of ``keys``, in order (None for a key not set), read on the server at
        one instant, in one request. Values that do not fit in one reply frame all together
        raise ``ValueError``: ask for fewer keys at a time. A single ``bytes`` or ``str``
        raises ``TypeError``."""
    def update_value(
        self, key: _Bytes, func: Callable[[Optional[bytes]], Optional[_Bytes]]
    ) -> Optional[bytes]:
        """Atomically replaces the value of ``key`` with ``func(old)`` (``old`` None: the key
        is not set; a return of None removes it) and returns the new value. Built on this
        side as ``get`` and ``compare_and_set``, again from the read when another client
        changed the key in between: **``func`` may run more than once**, and only its last
        result is stored, so it must not count on running once. When ``func`` returns the
        value it was given, nothing is written. The key keeps its deadline. ``func`` runs
        with the GIL held; the requests release it."""
    def scan(
        self,
        cursor: int = 0,
        count: int = 100,
        prefix: Optional[_Bytes] = None,
        match: Optional[_Bytes] = None,
    ) -> tuple[int, list[bytes]]:
        """One page of a walk over the server's keys, as ``KvStore.scan`` (the same
        guarantees, filters and errors): returns ``(cursor, keys)``; pass each cursor to
        the next call until it is 0. The server looks at no more than 65 536 keys per call
        and makes a page smaller when it would not fit in a reply frame."""
    def scan_iter(
        self,
        prefix: Optional[_Bytes] = None,
        match: Optional[_Bytes] = None,
        count: int = 100,
    ) -> KeyIterator:
        """The server's keys that start with ``prefix`` and match ``match``, walked with
        ``scan`` pages of ``count``: one page is in memory at a time."""
    def keys(
        self, prefix: Optional[_Bytes] = None, match: Optional[_Bytes] = None
    ) -> KeyIterator:
        """The server's keys (starting with ``prefix``, matching the glob ``match``), walked
        a ``scan`` page at a time (``scan_iter``): never the whole key set at once."""
    def __iter__(self) -> KeyIterator:
        """Every key of the server, walked a ``scan`` page at a time."""
    def batch(self) -> Batch:
        """A new, empty batch of writes sent to the server as one request and applied
        there all at once, or not at all (see ``Batch``)::

            with client.batch() as b:
                b["from"] = b"7"
                del b["pending"]
                b.set("session", b"...", ttl=30)

        The batch is sent when the block ends normally; if the block raises, nothing is
        sent."""
    def checkpoint(self, dest: Union[str, os.PathLike[str]]) -> None:
        """Writes an online checkpoint of the server's store into ``dest`` (see
        ``KvStore.checkpoint``). ``dest`` is a path on the **server's** machine, written by
        the server's process: the server's user must be able to create it there (a
        relative path starts in the server's working directory). ``dest`` must not exist,
        or be an empty directory."""
    def remove(self, key: _Bytes) -> None:
        """Removes ``key``; ``KeyError`` if it is not set."""
    def compare_and_set(
        self, key: _Bytes, expected: Optional[_Bytes], new: Optional[_Bytes]
    ) -> bool:
        """Atomically on the server: if the value of ``key`` is ``expected`` (None: the key
        is not set), sets it to ``new`` (None: removes it) and returns True; otherwise
        changes nothing and returns False. ``b""`` is a value, not absence.

        Atomic against every other request of every client of the server. A True is
        acknowledged as ``set`` is. A server older than this request answers it with a
        protocol error (``ServerError``) and closes the connection."""
    def close(self) -> None:
        """Closes the connection. Closing twice does nothing; any other use of a closed
        client raises ``ValueError``."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` has been called."""
    @property
    def addr(self) -> str:
        """The server's address, as given."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool:
        """Closes the client (see ``close()``)."""
