//! Commands on keys whatever their values, as redis-server 7 answers them: `DEL`, `UNLINK`,
//! `EXISTS`, `TOUCH`, `KEYS`, `SCAN`, `RANDOMKEY`, `TYPE`, `RENAME`, `RENAMENX`, `COPY`,
//! `FLUSHDB`, `FLUSHALL`, `DBSIZE`, `OBJECT`.
//!
//! kvs has one database (Redis's 0) and one type of value (strings). `DEL` of several keys,
//! `RENAME`, `RENAMENX` and `COPY` are one [`transaction`](super::Engine::transaction) each
//! (a renamed or copied key keeps its deadline); `EXISTS` and `TOUCH` read their keys at one
//! instant. `FLUSHDB` and `FLUSHALL` walk the store and remove its keys a page at a time: every
//! key there was when they started is gone when they answer, but they are not atomic (a key
//! another client writes while they run may survive them, and a crash during one may leave
//! part of the keys).
//!
//! Its rows of the command table are `COMMANDS` below; each command is a unit struct with its
//! [`Command`] impl (see [the table](super) for how to add one).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use super::strings::refuse;
use super::{handler, transact, Class, Command, Context, Keys, Row};
use crate::resp::frame::{write_array_len, write_bulk, write_integer, write_nil, write_simple};
use crate::resp::request::{
    integer_arg, is_option, parse_i64, unknown_subcommand, wrong_arity, Args, ErrorReply, Outcome,
    SYNTAX_ERROR,
};
use crate::{glob_match, KeyExpiry, KvsError, Result, ScanFilter, WriteBatch};

const fn row(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    class: Class,
    summary: &'static str,
    since: &'static str,
    handler: super::Handler,
) -> Row {
    Row {
        name,
        arity,
        flags,
        class,
        keys: Keys::FIRST,
        group: "generic",
        since,
        summary,
        handler,
    }
}

pub(super) const COMMANDS: &[Row] = &[
    Row {
        keys: Keys::ALL,
        ..row(
            "del",
            -2,
            &[],
            Class::Write,
            "Delete keys",
            "1.0.0",
            handler::<Del>(),
        )
    },
    Row {
        keys: Keys::ALL,
        ..row(
            "unlink",
            -2,
            &["fast"],
            Class::Write,
            "Delete keys (in Redis, reclaiming memory in the background)",
            "4.0.0",
            handler::<Del>(),
        )
    },
    Row {
        keys: Keys::ALL,
        ..row(
            "exists",
            -2,
            &["fast"],
            Class::Read,
            "Count how many of the given keys exist",
            "1.0.0",
            handler::<Exists>(),
        )
    },
    Row {
        keys: Keys::ALL,
        ..row(
            "touch",
            -2,
            &["fast"],
            Class::Read,
            "Count how many of the given keys exist (Redis also marks them as accessed)",
            "3.2.1",
            handler::<Exists>(),
        )
    },
    Row {
        keys: Keys::NONE,
        ..row(
            "keys",
            2,
            &[],
            Class::Read,
            "Find all keys matching the given pattern",
            "1.0.0",
            handler::<KeysMatching>(),
        )
    },
    Row {
        keys: Keys::NONE,
        ..row(
            "scan",
            -2,
            &[],
            Class::Read,
            "Incrementally iterate the keys space",
            "2.8.0",
            handler::<Scan>(),
        )
    },
    Row {
        keys: Keys::NONE,
        ..row(
            "randomkey",
            1,
            &[],
            Class::Read,
            "Return a random key from the keyspace",
            "1.0.0",
            handler::<RandomKey>(),
        )
    },
    row(
        "type",
        2,
        &["fast"],
        Class::Read,
        "Determine the type stored at key",
        "1.0.0",
        handler::<Type>(),
    ),
    Row {
        keys: Keys::new(1, 2, 1),
        ..row(
            "rename",
            3,
            &[],
            Class::Write,
            "Rename a key",
            "1.0.0",
            handler::<Rename>(),
        )
    },
    Row {
        keys: Keys::new(1, 2, 1),
        ..row(
            "renamenx",
            3,
            &["fast"],
            Class::Write,
            "Rename a key, only if the new key does not exist",
            "1.0.0",
            handler::<RenameNx>(),
        )
    },
    Row {
        keys: Keys::new(1, 2, 1),
        ..row(
            "copy",
            -3,
            &["denyoom"],
            Class::Write,
            "Copy a key",
            "6.2.0",
            handler::<Copy>(),
        )
    },
    Row {
        keys: Keys::NONE,
        group: "server",
        ..row(
            "flushdb",
            -1,
            &[],
            Class::Write,
            "Remove all keys from the current database",
            "1.0.0",
            handler::<Flush<false>>(),
        )
    },
    Row {
        keys: Keys::NONE,
        group: "server",
        ..row(
            "flushall",
            -1,
            &[],
            Class::Write,
            "Remove all keys from all databases",
            "1.0.0",
            handler::<Flush<true>>(),
        )
    },
    Row {
        keys: Keys::NONE,
        group: "server",
        ..row(
            "dbsize",
            1,
            &["fast"],
            Class::Read,
            "Return the number of keys",
            "1.0.0",
            handler::<DbSize>(),
        )
    },
    Row {
        keys: Keys::NONE,
        ..row(
            "object",
            -2,
            &[],
            Class::Read,
            "Inspect the internals of Redis objects",
            "2.2.3",
            handler::<Object>(),
        )
    },
];

/// `DEL key [key ...]` and `UNLINK key [key ...]`: how many of the keys were removed (a key
/// named twice counts once).
struct Del;

impl Command for Del {
    type Parsed<'a, 'r> = Args<'a, 'r>;

    fn parse<'a, 'r>(args: Args<'a, 'r>) -> std::result::Result<Args<'a, 'r>, ErrorReply> {
        Ok(args.skip(1))
    }

    fn run(keys: Args<'_, '_>, cx: &mut Context<'_>) -> Result<Outcome> {
        let removed = if keys.len() == 1 {
            match cx.engine.remove_bytes(keys.get(0)) {
                Ok(()) => 1,
                Err(KvsError::KeyNotFound) => 0,
                Err(e) => return Err(e),
            }
        } else {
            transact(cx.engine, |tx| {
                let mut removed = 0;
                for key in keys.iter() {
                    if tx.remove(key)? {
                        removed += 1;
                    }
                }
                Ok(removed)
            })?
        };
        write_integer(cx.out, removed);
        Ok(Outcome::Continue)
    }
}

/// `EXISTS key [key ...]` and `TOUCH key [key ...]`: how many of the keys are set, a key
/// named twice counting twice, read at one instant.
struct Exists;

impl Command for Exists {
    type Parsed<'a, 'r> = Args<'a, 'r>;

    fn parse<'a, 'r>(args: Args<'a, 'r>) -> std::result::Result<Args<'a, 'r>, ErrorReply> {
        Ok(args.skip(1))
    }

    fn run(keys: Args<'_, '_>, cx: &mut Context<'_>) -> Result<Outcome> {
        let found = if keys.len() == 1 {
            i64::from(cx.engine.contains_key(keys.get(0))?)
        } else {
            let keys: Vec<&[u8]> = keys.iter().collect();
            let values = cx.engine.get_many_bytes(&keys)?;
            values.iter().filter(|v| v.is_some()).count() as i64
        };
        write_integer(cx.out, found);
        Ok(Outcome::Continue)
    }
}

/// `KEYS pattern`: every key matching the glob `pattern` (Redis's rules: [`glob_match`]).
struct KeysMatching;

impl Command for KeysMatching {
    type Parsed<'a, 'r> = &'a [u8];

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<&'a [u8], ErrorReply> {
        Ok(args.get(1))
    }

    fn run(pattern: &[u8], cx: &mut Context<'_>) -> Result<Outcome> {
        let mut keys = cx.engine.keys()?;
        keys.retain(|key| glob_match(pattern, key));
        write_array_len(cx.out, keys.len());
        for key in keys {
            write_bulk(cx.out, &key);
        }
        Ok(Outcome::Continue)
    }
}

/// The most keys one `SCAN` asks the engine to look at, whatever its `COUNT`: a page's memory
/// stays bounded (Redis takes `COUNT` as a hint too).
const MAX_SCAN_COUNT: usize = 100_000;

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`
struct Scan;

/// A `SCAN`, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ScanArgs<'a> {
    cursor: u64,
    pattern: Option<&'a [u8]>,
    count: usize,
    /// `TYPE` names a type other than `string`: no key is returned.
    other_type: bool,
}

/// A cursor as Redis reads it (C's `strtoul`): decimal digits after an optional sign, a
/// negative number wrapping around, and the empty string 0; no leading blank, nothing after
/// the digits, no overflow.
fn parse_cursor(bytes: &[u8]) -> Option<u64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, bytes),
    };
    if bytes.is_empty() {
        return Some(0);
    }
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(if negative { n.wrapping_neg() } else { n })
}

impl Command for Scan {
    type Parsed<'a, 'r> = ScanArgs<'a>;

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<ScanArgs<'a>, ErrorReply> {
        let cursor = parse_cursor(args.get(1)).ok_or_else(|| "ERR invalid cursor".to_string())?;
        let mut scan = ScanArgs {
            cursor,
            pattern: None,
            count: 10,
            other_type: false,
        };
        let mut i = 2;
        while i < args.len() {
            let (opt, more) = (args.get(i), i + 1 < args.len());
            if is_option(opt, "count") && more {
                let count = integer_arg(args.get(i + 1))?;
                if count < 1 {
                    return Err(SYNTAX_ERROR.to_string());
                }
                scan.count =
                    usize::try_from(count).map_or(MAX_SCAN_COUNT, |c| c.min(MAX_SCAN_COUNT));
            } else if is_option(opt, "match") && more {
                let pattern = args.get(i + 1);
                scan.pattern = (pattern != b"*").then_some(pattern);
            } else if is_option(opt, "type") && more {
                scan.other_type = !is_option(args.get(i + 1), "string");
            } else {
                return Err(SYNTAX_ERROR.to_string());
            }
            i += 2;
        }
        Ok(scan)
    }

    fn run(scan: ScanArgs<'_>, cx: &mut Context<'_>) -> Result<Outcome> {
        let filter = ScanFilter {
            prefix: Vec::new(),
            pattern: scan.pattern.map(<[u8]>::to_vec),
        };
        let page = match cx.engine.scan_bytes(scan.cursor, scan.count, &filter) {
            Ok(page) => page,
            // A cursor this engine never returned (or has forgotten): Redis's words, then the
            // engine's, which say what to do.
            Err(KvsError::InvalidArgument(why)) => {
                return refuse(cx, &format!("ERR invalid cursor: {why}"))
            }
            Err(e) => return Err(e),
        };
        let keys = if scan.other_type {
            Vec::new()
        } else {
            page.keys
        };
        write_array_len(cx.out, 2);
        write_bulk(cx.out, page.cursor.to_string().as_bytes());
        write_array_len(cx.out, keys.len());
        for key in keys {
            write_bulk(cx.out, &key);
        }
        Ok(Outcome::Continue)
    }
}

/// `RANDOMKEY`: one of the keys, picked at random (nil when there is none).
struct RandomKey;

impl Command for RandomKey {
    type Parsed<'a, 'r> = ();

    fn parse(_: Args<'_, '_>) -> std::result::Result<(), ErrorReply> {
        Ok(())
    }

    fn run((): (), cx: &mut Context<'_>) -> Result<Outcome> {
        let mut keys = cx.engine.keys()?;
        if keys.is_empty() {
            write_nil(cx.out, cx.client.version);
        } else {
            // A fresh `RandomState` is seeded from the OS's randomness.
            let pick = RandomState::new().hash_one(keys.len()) as usize % keys.len();
            let key = keys.swap_remove(pick);
            write_bulk(cx.out, &key);
        }
        Ok(Outcome::Continue)
    }
}

/// `TYPE key`: `string`, or `none` for a missing key.
struct Type;

impl Command for Type {
    type Parsed<'a, 'r> = &'a [u8];

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<&'a [u8], ErrorReply> {
        Ok(args.get(1))
    }

    fn run(key: &[u8], cx: &mut Context<'_>) -> Result<Outcome> {
        let set = cx.engine.contains_key(key)?;
        write_simple(cx.out, if set { "string" } else { "none" });
        Ok(Outcome::Continue)
    }
}

/// What a `RENAME` or `COPY` found.
enum Moved {
    /// The source key is not set.
    NoSource,
    /// The destination is set and is not to be replaced.
    Kept,
    /// Done.
    Done,
}

/// Sets `to` to the value and deadline of `from`, in one transaction; `remove`: also removes
/// `from` (a rename); `replace`: an existing `to` is overwritten (else nothing is done).
fn move_key(
    cx: &mut Context<'_>,
    from: &[u8],
    to: &[u8],
    remove: bool,
    replace: bool,
) -> Result<Moved> {
    transact(cx.engine, |tx| {
        let deadline = match tx.expiry(from)? {
            KeyExpiry::Missing => return Ok(Moved::NoSource),
            KeyExpiry::Never => None,
            KeyExpiry::At(deadline) => Some(deadline),
        };
        let Some(value) = tx.get(from)? else {
            return Ok(Moved::NoSource);
        };
        if from == to {
            return Ok(Moved::Done);
        }
        if !replace && tx.expiry(to)? != KeyExpiry::Missing {
            return Ok(Moved::Kept);
        }
        tx.set(to, &value, deadline)?;
        if remove {
            tx.remove(from)?;
        }
        Ok(Moved::Done)
    })
}

/// `RENAME key newkey`
struct Rename;

impl Command for Rename {
    type Parsed<'a, 'r> = (&'a [u8], &'a [u8]);

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<(&'a [u8], &'a [u8]), ErrorReply> {
        Ok((args.get(1), args.get(2)))
    }

    fn run((from, to): (&[u8], &[u8]), cx: &mut Context<'_>) -> Result<Outcome> {
        match move_key(cx, from, to, true, true)? {
            Moved::NoSource => return refuse(cx, "ERR no such key"),
            Moved::Kept | Moved::Done => write_simple(cx.out, "OK"),
        }
        Ok(Outcome::Continue)
    }
}

/// `RENAMENX key newkey`: `1` if renamed, `0` if `newkey` was set (or is `key` itself).
struct RenameNx;

impl Command for RenameNx {
    type Parsed<'a, 'r> = (&'a [u8], &'a [u8]);

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<(&'a [u8], &'a [u8]), ErrorReply> {
        Ok((args.get(1), args.get(2)))
    }

    fn run((from, to): (&[u8], &[u8]), cx: &mut Context<'_>) -> Result<Outcome> {
        match move_key(cx, from, to, true, false)? {
            Moved::NoSource => return refuse(cx, "ERR no such key"),
            Moved::Kept => write_integer(cx.out, 0),
            Moved::Done => write_integer(cx.out, i64::from(from != to)),
        }
        Ok(Outcome::Continue)
    }
}

/// `COPY source destination [DB destination-db] [REPLACE]`
struct Copy;

impl Command for Copy {
    /// Source, destination, `REPLACE`.
    type Parsed<'a, 'r> = (&'a [u8], &'a [u8], bool);

    fn parse<'a>(
        args: Args<'a, '_>,
    ) -> std::result::Result<(&'a [u8], &'a [u8], bool), ErrorReply> {
        let mut replace = false;
        let mut j = 3;
        while j < args.len() {
            let opt = args.get(j);
            if is_option(opt, "replace") {
                replace = true;
            } else if is_option(opt, "db") && j + 1 < args.len() {
                let db = integer_arg(args.get(j + 1))?;
                if i32::try_from(db).is_err() {
                    return Err("ERR value is out of range, value must between -2147483648 \
                                and 2147483647"
                        .to_string());
                }
                if db != 0 {
                    // kvs has database 0 only: any other is out of range.
                    return Err("ERR DB index is out of range".to_string());
                }
                j += 1;
            } else {
                return Err(SYNTAX_ERROR.to_string());
            }
            j += 1;
        }
        if args.get(1) == args.get(2) {
            return Err("ERR source and destination objects are the same".to_string());
        }
        Ok((args.get(1), args.get(2), replace))
    }

    fn run((from, to, replace): (&[u8], &[u8], bool), cx: &mut Context<'_>) -> Result<Outcome> {
        let copied = matches!(move_key(cx, from, to, false, replace)?, Moved::Done);
        write_integer(cx.out, i64::from(copied));
        Ok(Outcome::Continue)
    }
}

/// How many keys a flush asks each page of its walk for.
const FLUSH_PAGE: usize = 1000;

/// The bytes a flush puts in one batch at most (keys, and a generous allowance for each
/// record's framing), well under the kvs engine's limit on a batch.
const FLUSH_BATCH_BYTES: usize = 8 << 20;
const FLUSH_RECORD_OVERHEAD: usize = 64;

/// `FLUSHDB [ASYNC | SYNC]` and `FLUSHALL [ASYNC | SYNC]` (`ALL`: the latter's name): both
/// remove every key of kvs's one database before they answer.
struct Flush<const ALL: bool>;

impl<const ALL: bool> Command for Flush<ALL> {
    type Parsed<'a, 'r> = ();

    fn parse(args: Args<'_, '_>) -> std::result::Result<(), ErrorReply> {
        match args.len() {
            1 => Ok(()),
            2 if is_option(args.get(1), "sync") || is_option(args.get(1), "async") => Ok(()),
            _ => Err(SYNTAX_ERROR.to_string()),
        }
    }

    /// Walks the store with [`scan_bytes`](super::Engine::scan_bytes) and removes each page's
    /// keys as a batch: memory and batches stay bounded whatever the size of the store. Every
    /// key set when the flush starts is returned by the walk (it is set until the walk reaches
    /// it), so it is gone when the flush answers, unless another client sets it again.
    fn run((): (), cx: &mut Context<'_>) -> Result<Outcome> {
        let mut cursor = 0;
        let mut batch = WriteBatch::new();
        loop {
            let page = cx
                .engine
                .scan_bytes(cursor, FLUSH_PAGE, &ScanFilter::all())?;
            let mut bytes = 0;
            for key in page.keys {
                bytes += key.len() + FLUSH_RECORD_OVERHEAD;
                batch.remove(&key);
                if bytes >= FLUSH_BATCH_BYTES {
                    cx.engine.apply_batch(&batch)?;
                    batch.clear();
                    bytes = 0;
                }
            }
            if !batch.is_empty() {
                cx.engine.apply_batch(&batch)?;
                batch.clear();
            }
            cursor = page.cursor;
            if cursor == 0 {
                break;
            }
        }
        write_simple(cx.out, "OK");
        Ok(Outcome::Continue)
    }
}

/// `DBSIZE`
struct DbSize;

impl Command for DbSize {
    type Parsed<'a, 'r> = ();

    fn parse(_: Args<'_, '_>) -> std::result::Result<(), ErrorReply> {
        Ok(())
    }

    fn run((): (), cx: &mut Context<'_>) -> Result<Outcome> {
        write_integer(cx.out, cx.engine.len()? as i64);
        Ok(Outcome::Continue)
    }
}

/// `OBJECT ENCODING | FREQ | IDLETIME | REFCOUNT key` and `OBJECT HELP`.
struct Object;

/// The sub-commands of `OBJECT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectQuery<'a> {
    Encoding(&'a [u8]),
    Freq(&'a [u8]),
    IdleTime(&'a [u8]),
    RefCount(&'a [u8]),
    Help,
}

/// `OBJECT HELP`, as Redis 7.0 words it.
const OBJECT_HELP: &[&str] = &[
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "IDLETIME <key>",
    "    Return the idle time of the <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP",
    "    Prints this help.",
];

/// Redis's encoding of a string it was given with `SET`: `int` for a 64-bit integer written
/// canonically (at most 20 bytes), `embstr` up to 44 bytes, `raw` beyond.
fn encoding(value: &[u8]) -> &'static str {
    if value.len() <= 20 && parse_i64(value).is_some() {
        "int"
    } else if value.len() <= 44 {
        "embstr"
    } else {
        "raw"
    }
}

impl Command for Object {
    type Parsed<'a, 'r> = ObjectQuery<'a>;

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<ObjectQuery<'a>, ErrorReply> {
        let sub = args.get(1);
        type Query<'a> = fn(&'a [u8]) -> ObjectQuery<'a>;
        let with_key: [(&str, Query<'a>); 4] = [
            ("encoding", ObjectQuery::Encoding),
            ("freq", ObjectQuery::Freq),
            ("idletime", ObjectQuery::IdleTime),
            ("refcount", ObjectQuery::RefCount),
        ];
        if let Some((name, query)) = with_key.into_iter().find(|(name, _)| is_option(sub, name)) {
            return if args.len() == 3 {
                Ok(query(args.get(2)))
            } else {
                Err(wrong_arity(&format!("object|{name}")))
            };
        }
        if is_option(sub, "help") {
            return if args.len() == 2 {
                Ok(ObjectQuery::Help)
            } else {
                Err(wrong_arity("object|help"))
            };
        }
        Err(unknown_subcommand(sub, "OBJECT"))
    }

    fn run(query: ObjectQuery<'_>, cx: &mut Context<'_>) -> Result<Outcome> {
        let key = match query {
            ObjectQuery::Help => {
                write_array_len(cx.out, OBJECT_HELP.len());
                for line in OBJECT_HELP {
                    write_simple(cx.out, line);
                }
                return Ok(Outcome::Continue);
            }
            ObjectQuery::Encoding(key)
            | ObjectQuery::Freq(key)
            | ObjectQuery::IdleTime(key)
            | ObjectQuery::RefCount(key) => key,
        };
        let Some(value) = cx.engine.get_bytes(key)? else {
            write_nil(cx.out, cx.client.version);
            return Ok(Outcome::Continue);
        };
        match query {
            ObjectQuery::Encoding(_) => write_bulk(cx.out, encoding(&value).as_bytes()),
            ObjectQuery::Freq(_) => {
                return refuse(
                    cx,
                    "ERR An LFU maxmemory policy is not selected, access frequency not \
                     tracked. Please note that when switching between policies at runtime \
                     LRU and LFU data will take some time to adjust.",
                )
            }
            // kvs does not track accesses: every key reads as just used.
            ObjectQuery::IdleTime(_) => write_integer(cx.out, 0),
            ObjectQuery::RefCount(_) => {
                // Redis shares the objects of the integers 0 to 9999 and counts their
                // references as "always".
                let shared = encoding(&value) == "int"
                    && parse_i64(&value).is_some_and(|n| (0..10_000).contains(&n));
                write_integer(cx.out, if shared { i64::from(i32::MAX) } else { 1 });
            }
            ObjectQuery::Help => {}
        }
        Ok(Outcome::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_parse_as_strtoul_does() {
        assert_eq!(parse_cursor(b"0"), Some(0));
        assert_eq!(parse_cursor(b""), Some(0));
        assert_eq!(parse_cursor(b"17"), Some(17));
        assert_eq!(parse_cursor(b"+17"), Some(17));
        assert_eq!(parse_cursor(b"-1"), Some(u64::MAX));
        assert_eq!(parse_cursor(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b"18446744073709551616"[..],
            b" 1",
            b"1 ",
            b"x",
            b"-",
            b"1.5",
        ] {
            assert_eq!(parse_cursor(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn encodings_follow_redis_rules_for_set() {
        assert_eq!(encoding(b"12345"), "int");
        assert_eq!(encoding(b"-9223372036854775808"), "int");
        assert_eq!(encoding(b"9223372036854775808"), "embstr");
        assert_eq!(encoding(b"007"), "embstr");
        assert_eq!(encoding(&[b'a'; 44]), "embstr");
        assert_eq!(encoding(&[b'a'; 45]), "raw");
        assert_eq!(encoding(b""), "embstr");
    }

    /// The commands carried out on an engine that keeps the contracts (replies as
    /// redis-server 7.0 gives them; `tests/tests/redis_strings.rs` compares with it live).
    #[test]
    fn key_commands_reply_as_redis() {
        use crate::resp::commands::testing::Server;
        for mut s in Server::both() {
            s.check(&[
                ("MSET a 1 b 2 c 3", "+OK\r\n"),
                ("EXISTS a a d", ":2\r\n"),
                ("TOUCH a b d", ":2\r\n"),
                ("DEL a a d", ":1\r\n"),
                ("UNLINK b", ":1\r\n"),
                ("SET e 5 EX 100", "+OK\r\n"),
                ("RENAME e f", "+OK\r\n"),
                ("TTL f", ":100\r\n"),
                ("RENAME e f", "-ERR no such key\r\n"),
                ("RENAMENX f c", ":0\r\n"),
                ("RENAMENX f f", ":0\r\n"),
                ("RENAME f f", "+OK\r\n"),
                ("COPY f g", ":1\r\n"),
                ("TTL g", ":100\r\n"),
                ("COPY c g", ":0\r\n"),
                ("COPY c g REPLACE", ":1\r\n"),
                ("TTL g", ":-1\r\n"),
                (
                    "COPY c c",
                    "-ERR source and destination objects are the same\r\n",
                ),
                ("COPY c h DB 0", ":1\r\n"),
                ("COPY c h DB 1", "-ERR DB index is out of range\r\n"),
                ("TYPE c", "+string\r\n"),
                ("TYPE nope", "+none\r\n"),
                ("OBJECT ENCODING c", "$3\r\nint\r\n"),
                ("OBJECT REFCOUNT c", ":2147483647\r\n"),
                ("OBJECT FREQ nope", "$-1\r\n"),
                (
                    "OBJECT ENCODING",
                    "-ERR wrong number of arguments for 'object|encoding' command\r\n",
                ),
                ("KEYS [cf]", "*2\r\n$1\r\nc\r\n$1\r\nf\r\n"),
                ("SCAN 0 COUNT 0", "-ERR syntax error\r\n"),
                ("SCAN x", "-ERR invalid cursor\r\n"),
                ("DBSIZE", ":4\r\n"),
                ("FLUSHALL BOGUS", "-ERR syntax error\r\n"),
                ("FLUSHDB ASYNC", "+OK\r\n"),
                ("DBSIZE", ":0\r\n"),
                ("RANDOMKEY", "$-1\r\n"),
                ("SET only 1", "+OK\r\n"),
                ("RANDOMKEY", "$4\r\nonly\r\n"),
            ]);
            // A SCAN walk returns every key, a page at a time, until the cursor is 0 again.
            for i in 0..25 {
                s.line(&format!("SET key:{i} v"));
            }
            let mut cursor = "0".to_string();
            let mut found = std::collections::BTreeSet::new();
            loop {
                let reply = s.line(&format!("SCAN {cursor} MATCH key:* COUNT 7"));
                let lines: Vec<&str> = reply.split("\r\n").collect();
                cursor = lines[2].to_string();
                for key in lines.iter().skip(5).step_by(2) {
                    found.insert(key.to_string());
                }
                if cursor == "0" {
                    break;
                }
            }
            found.remove("");
            assert_eq!(found.len(), 25, "{found:?}");
            assert_eq!(
                s.line("SCAN 0 TYPE hash COUNT 100"),
                "*2\r\n$1\r\n0\r\n*0\r\n"
            );
        }
    }
}
