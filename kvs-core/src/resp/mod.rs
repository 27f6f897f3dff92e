//! RESP2 and RESP3, the Redis protocol: so that `redis-cli`, `redis-benchmark` and every Redis client
//! library can use a [`KvsServer`](crate::KvsServer).
//!
//! # Same port as the kvs protocol
//!
//! The server tells the two protocols apart by the first byte a connection sends, and a
//! connection never switches: `*`, an ASCII letter or a blank (C's `isspace`) starts
//! RESP, anything else the kvs protocol. Why that rule is sound, and why it caps the kvs
//! frame limit at [`ServerConfig::MAX_FRAME_LEN`](crate::ServerConfig::MAX_FRAME_LEN), is the
//! server's business: see `server/sniff.rs`.
//!
//! # Layers
//!
//! As in [`protocol`](crate::protocol), kept apart:
//! - [`frame`]: bytes on the wire. An incremental request parser (arrays of bulk strings, and
//!   inline commands) that checks every length against its [`Limits`] before allocating, and
//!   the writers of replies.
//! - `request`: what every command sees of a request: its arguments (slices of the input
//!   buffer), the client that sent it, and Redis's wording for the error replies they share.
//! - `commands`: the command table, one row per command (name, arity, flags, kvs's class, key
//!   positions, `COMMAND DOCS` fields, and how it parses and runs), and the dispatch that
//!   finds a request's row, checks its arity and runs it on a
//!   [`KvsEngine`](crate::KvsEngine). One module per family of commands: `strings` (`SET`
//!   with every Redis 7 option, `GET`, `GETEX`, `MGET`, `MSET`, `INCR` and the other string
//!   commands), `expire` (`EXPIRE` and friends, `TTL`, `PTTL`, `PERSIST`), `keys` (`DEL`,
//!   `EXISTS`, `KEYS`, `SCAN`, `RENAME`, `COPY`, `FLUSHALL`, `OBJECT`, ...), `connection`
//!   (`AUTH`, `HELLO`, `PING`, `ECHO`, `SELECT`, `CLIENT`, `RESET`, `QUIT`), `transactions`
//!   (`MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`), `server` (`INFO`, `COMMAND` with
//!   `COUNT`, `LIST`, `INFO`, `DOCS`, answered from the table; `CONFIG GET` and `SET`, `TIME`,
//!   `SAVE`, `BGSAVE`, `LASTSAVE`, `SHUTDOWN`). Replies and error strings are Redis's. Adding a
//!   command touches only its family's file.
//! - `session`: a connection's request loop between the server's buffers and the commands.
//!   Requests pipelined in one write are answered in order; the writes that a command marks
//!   as batchable (plain `SET`s) are held and written together, and a run of pipelined counter
//!   updates (`INCR` and friends) runs as one engine transaction. The connection's
//!   transaction state (`MULTI`'s queue, the `WATCH`ed keys) lives here too; the family
//!   `transactions` has the commands.
//! - `info`: the text of `INFO`.
//!
//! # What is public
//!
//! Only the request parser: [`RequestParser`], [`RequestStatus`] and [`Limits`] (also at
//! [`frame`], with the limits' constants). It is the code a server runs on every byte a RESP
//! client sends, so it is what a tool, a test or a fuzzer needs to drive as the server does
//! (`fuzz/` and the hostile-input tests do). Everything else here (the reply writers, the
//! command table, sessions, `INFO`) is reached only through a [`KvsServer`](crate::KvsServer):
//! the replies on the wire are the interface, and they are Redis's. kvs has no RESP client; a
//! program that reads RESP replies uses a Redis client library.
//!
//! # RESP3
//!
//! Connections start in RESP2. A client that sends `HELLO 3` (redis-py 8 does, by default)
//! gets RESP3 from then on; for kvs's commands only two things change: "no value" is `_`
//! instead of `$-1`, and maps (`HELLO`, `CONFIG GET`, `COMMAND DOCS`) are `%` maps instead of
//! flat arrays.
//!
//! The connection itself (buffers, timeouts, back-pressure, shutdown) is the server's, the
//! same for both protocols.
//!
//! # Limits
//!
//! The same as the kvs protocol's: no bulk string, and no request's bulk strings together,
//! longer than the server's frame limit; at most [`frame::DEFAULT_MAX_ARGS`] arguments; all
//! checked before allocating. A malformed or oversized request gets `-ERR Protocol error: ...`
//! and that connection is closed; nothing else is affected.

mod commands;
pub mod frame;
pub(crate) mod info;
mod request;
pub(crate) mod session;

pub use self::frame::{Limits, RequestParser, RequestStatus};
pub(crate) use self::session::Session;
