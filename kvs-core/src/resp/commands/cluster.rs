//! `CLUSTER`: Redis Cluster's view of the server, for cluster-aware clients (redis-py's
//! `RedisCluster`, `redis-cli -c`, and the like).
//!
//! With [`ClusterMode::Emulated`](crate::ClusterMode) the server presents itself as a cluster
//! of one node that owns all 16384 hash slots: `CLUSTER SLOTS`, `SHARDS`, `NODES`, `INFO`,
//! `MYID`, `KEYSLOT` and `HELP` answer as a Redis node in that position would. The node is
//! advertised at the address the asking client connected to (so each client is told an
//! address it can reach), and under an ID (40 hex digits) drawn when the server starts. There
//! is no other node: no gossip, no failover, no slot migration, never a `MOVED` or `ASK`
//! redirection. Without the mode (the default), every `CLUSTER` subcommand answers what a Redis
//! server without cluster support answers, `ERR This instance has cluster support disabled`,
//! after the same checks of the subcommand's name and arity.
//!
//! Hash slots are Redis's exactly (its `keyHashSlot`): CRC16 (the XMODEM variant, as in
//! Redis's `crc16.c`) of the key, modulo 16384, where a key with a `{...}` holding at least one
//! byte is hashed on those bytes alone (the first `{` and the first `}` after it).
//!
//! Its row of the command table is `COMMANDS` below (see [the table](super) for how to add
//! a command).

use std::net::SocketAddr;

use super::{handler, Class, Command, Context, Keys, Row};
use crate::resp::frame::{
    write_array_len, write_bulk, write_error, write_integer, write_map_len, write_simple,
};
use crate::resp::request::{unknown_subcommand, wrong_arity, Args, ErrorReply, Outcome};
use crate::Result;

pub(super) const COMMANDS: &[Row] = &[Row {
    name: "cluster",
    arity: -2,
    flags: &[],
    class: Class::Admin,
    keys: Keys::NONE,
    group: "cluster",
    since: "3.0.0",
    summary: "A container for cluster commands",
    handler: handler::<Cluster>(),
}];

/// Redis Cluster's number of hash slots.
pub(crate) const SLOTS: u16 = 16384;

/// What a Redis server without cluster support answers to every `CLUSTER` subcommand.
const DISABLED: &str = "ERR This instance has cluster support disabled";

/// `CLUSTER HELP`'s lines, in Redis's layout.
const HELP: &[&str] = &[
    "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "INFO",
    "    Return information about the cluster.",
    "KEYSLOT <key>",
    "    Return the hash slot for <key>.",
    "MYID",
    "    Return the node id.",
    "NODES",
    "    Return cluster configuration seen by node. Output format:",
    "    <id> <ip:port> <flags> <master> <pings> <pongs> <epoch> <link> <slot> ...",
    "SHARDS",
    "    Return information about slot range mappings and the nodes associated with them.",
    "SLOTS",
    "    Return information about slots range mappings. Each range is made of:",
    "    start, end, master and replicas IP addresses, ports and ids",
    "HELP",
    "    Prints this help.",
    "kvs emulates a cluster of one node owning every slot: no gossip, failover or migration.",
];

/// `CLUSTER subcommand [argument]`
struct Cluster;

/// The subcommands kvs answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub<'a> {
    Slots,
    Shards,
    Nodes,
    Info,
    MyId,
    KeySlot(&'a [u8]),
    Help,
}

impl Command for Cluster {
    type Parsed<'a, 'r> = Sub<'a>;

    fn parse<'a>(args: Args<'a, '_>) -> std::result::Result<Sub<'a>, ErrorReply> {
        let sub = args.get(1);
        let name = String::from_utf8_lossy(sub).to_ascii_lowercase();
        let (parsed, arity) = match name.as_str() {
            "slots" => (Sub::Slots, 2),
            "shards" => (Sub::Shards, 2),
            "nodes" => (Sub::Nodes, 2),
            "info" => (Sub::Info, 2),
            "myid" => (Sub::MyId, 2),
            "help" => (Sub::Help, 2),
            "keyslot" if args.len() == 3 => (Sub::KeySlot(args.get(2)), 3),
            "keyslot" => (Sub::KeySlot(b""), 3),
            _ => return Err(unknown_subcommand(sub, "CLUSTER")),
        };
        if args.len() != arity {
            return Err(wrong_arity(&format!("cluster|{name}")));
        }
        Ok(parsed)
    }

    fn run(sub: Sub<'_>, cx: &mut Context<'_>) -> Result<Outcome> {
        let Some(id) = cx.state.cluster_node_id() else {
            write_error(cx.out, DISABLED);
            return Ok(Outcome::Continue);
        };
        let node = Node {
            id,
            addr: advertised(cx.client.local_addr, cx.state.stats().port),
        };
        let out = &mut *cx.out;
        let version = cx.client.version;
        match sub {
            Sub::KeySlot(key) => write_integer(out, i64::from(key_slot(key))),
            Sub::MyId => write_bulk(out, id.as_bytes()),
            Sub::Info => write_bulk(out, INFO.as_bytes()),
            Sub::Nodes => write_bulk(out, node.nodes_line().as_bytes()),
            Sub::Help => {
                write_array_len(out, HELP.len());
                for line in HELP {
                    write_simple(out, line);
                }
            }
            Sub::Slots => {
                // One range, 0 to 16383, served by this node (ip, port, id, no metadata) and no
                // replica.
                write_array_len(out, 1);
                write_array_len(out, 3);
                write_integer(out, 0);
                write_integer(out, i64::from(SLOTS - 1));
                write_array_len(out, 4);
                write_bulk(out, node.addr.0.as_bytes());
                write_integer(out, i64::from(node.addr.1));
                write_bulk(out, id.as_bytes());
                write_map_len(out, 0, version);
            }
            Sub::Shards => {
                write_array_len(out, 1);
                write_map_len(out, 2, version);
                write_bulk(out, b"slots");
                write_array_len(out, 2);
                write_integer(out, 0);
                write_integer(out, i64::from(SLOTS - 1));
                write_bulk(out, b"nodes");
                write_array_len(out, 1);
                write_map_len(out, 7, version);
                write_bulk(out, b"id");
                write_bulk(out, id.as_bytes());
                write_bulk(out, b"port");
                write_integer(out, i64::from(node.addr.1));
                for field in ["ip", "endpoint"] {
                    write_bulk(out, field.as_bytes());
                    write_bulk(out, node.addr.0.as_bytes());
                }
                write_bulk(out, b"role");
                write_bulk(out, b"master");
                write_bulk(out, b"replication-offset");
                write_integer(out, 0);
                write_bulk(out, b"health");
                write_bulk(out, b"online");
            }
        }
        Ok(Outcome::Continue)
    }
}

/// `CLUSTER INFO` of a healthy one-node cluster owning every slot, in Redis's words.
const INFO: &str = "cluster_state:ok\r\n\
                    cluster_slots_assigned:16384\r\n\
                    cluster_slots_ok:16384\r\n\
                    cluster_slots_pfail:0\r\n\
                    cluster_slots_fail:0\r\n\
                    cluster_known_nodes:1\r\n\
                    cluster_size:1\r\n\
                    cluster_current_epoch:0\r\n\
                    cluster_my_epoch:0\r\n\
                    cluster_stats_messages_sent:0\r\n\
                    cluster_stats_messages_received:0\r\n\
                    total_cluster_links_buffer_limit_exceeded:0\r\n";

/// The one node, as it is advertised to the client asking.
struct Node<'a> {
    id: &'a str,
    /// IP (as text) and port.
    addr: (String, u16),
}

impl Node<'_> {
    /// Its line of `CLUSTER NODES`. The cluster bus port is 0: there is no bus.
    fn nodes_line(&self) -> String {
        format!(
            "{} {}:{}@0 myself,master - 0 0 0 connected 0-{}\n",
            self.id,
            self.addr.0,
            self.addr.1,
            SLOTS - 1
        )
    }
}

/// The IP (as text; an IPv4 client of a dual-stack socket sees its IPv4 address) and port a
/// client reached the server at; without it (not known), Redis's "unknown" IP, `""`, which
/// clients replace with the address they used, and the port the server listens on.
fn advertised(local: Option<SocketAddr>, port: u16) -> (String, u16) {
    match local {
        Some(addr) => (addr.ip().to_canonical().to_string(), addr.port()),
        None => (String::new(), port),
    }
}

/// The hash slot of `key`, as Redis computes it: CRC16 of the key, or of its hash tag (the
/// bytes between the first `{` and the first `}` after it, if there is at least one), modulo
/// 16384.
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed) & (SLOTS - 1)
}

/// CRC16-CCITT in its XMODEM form (polynomial 0x1021, initial value 0, no reflection, no
/// final XOR), as Redis's `crc16.c`: "123456789" gives 0x31C3.
fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ b)]
    })
}

/// The byte-at-a-time table of [`crc16`], built when kvs is compiled.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots as redis-server 7.0.15 (in cluster mode) answered `CLUSTER KEYSLOT` for each key:
    /// plain keys, hash tags, empty and unclosed tags, several tags, binary bytes, a long key.
    #[test]
    fn key_slots_are_redis_s() {
        let long = vec![b'x'; 1000];
        let cases: &[(&[u8], u16)] = &[
            (b"foo", 12182),
            (b"bar", 5061),
            (b"", 0),
            (b"{user1000}.following", 3443),
            (b"{user1000}.followers", 3443),
            (b"foo{}{bar}", 8363),
            (b"foo{{bar}}zap", 4015),
            (b"foo{bar}{zap}", 5061),
            (b"{}", 15257),
            (b"{", 4092),
            (b"}", 12090),
            (b"a{b", 13340),
            (b"{a}}", 15495),
            (b"123456789", 12739),
            (b"\xff\x00\x80", 7915),
            (b"key:0", 2592),
            (b"key:99999", 2036),
            (&long, 3195),
            (b"{}{a}", 13650),
            (b"a}{b}", 3300),
            (b"{\x00}c", 0),
        ];
        for &(key, slot) in cases {
            assert_eq!(key_slot(key), slot, "{:?}", String::from_utf8_lossy(key));
        }
    }

    /// The CRC itself: XMODEM's check value, and the table against the bit-by-bit definition.
    #[test]
    fn crc16_is_xmodem() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
        let bitwise = |bytes: &[u8]| {
            let mut crc = 0u16;
            for &b in bytes {
                crc ^= u16::from(b) << 8;
                for _ in 0..8 {
                    crc = if crc & 0x8000 != 0 {
                        (crc << 1) ^ 0x1021
                    } else {
                        crc << 1
                    };
                }
            }
            crc
        };
        let data: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for len in 0..data.len() {
            assert_eq!(crc16(&data[..len]), bitwise(&data[..len]), "{len} bytes");
        }
    }

    #[test]
    fn the_node_is_advertised_where_the_client_connected() {
        let v4: SocketAddr = "10.77.0.11:6379".parse().unwrap();
        assert_eq!(advertised(Some(v4), 1), ("10.77.0.11".to_string(), 6379));
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:7000".parse().unwrap();
        assert_eq!(advertised(Some(mapped), 1), ("10.0.0.1".to_string(), 7000));
        let v6: SocketAddr = "[::1]:7001".parse().unwrap();
        assert_eq!(advertised(Some(v6), 1), ("::1".to_string(), 7001));
        assert_eq!(advertised(None, 4000), (String::new(), 4000));
        let node = Node {
            id: "0123456789abcdef0123456789abcdef01234567",
            addr: ("10.77.0.11".to_string(), 6379),
        };
        assert_eq!(
            node.nodes_line(),
            "0123456789abcdef0123456789abcdef01234567 10.77.0.11:6379@0 myself,master - 0 0 0 \
             connected 0-16383\n"
        );
    }
}

#[cfg(test)]
mod dispatch_tests {
    use super::super::{dispatch, Context};
    use crate::resp::frame::Version;
    use crate::resp::request::{Args, Client};
    use crate::resp::session::Batch;
    use crate::server::state::ServerState;
    use crate::{ClusterMode, KvStore};

    /// An engine and the state of a server in one cluster mode.
    struct Server {
        _dir: tempfile::TempDir,
        engine: KvStore,
        state: ServerState,
    }

    impl Server {
        fn new(mode: ClusterMode) -> Server {
            let dir = tempfile::tempdir().unwrap();
            let engine = KvStore::open(dir.path()).unwrap();
            let state = ServerState::new(4000).with_cluster_mode(mode);
            Server {
                _dir: dir,
                engine,
                state,
            }
        }

        /// The reply to `line` (split on spaces) to a client of `version` that reached the
        /// server at `local`.
        fn reply(&self, version: Version, local: Option<&str>, line: &str) -> String {
            let mut client = Client::new(1);
            client.version = version;
            client.local_addr = local.map(|a| a.parse().unwrap());
            let mut buf = Vec::new();
            let mut ranges = Vec::new();
            for arg in line.split(' ') {
                ranges.push(buf.len()..buf.len() + arg.len());
                buf.extend_from_slice(arg.as_bytes());
            }
            let mut out = Vec::new();
            let mut cx = Context {
                engine: &self.engine,
                state: &self.state,
                client: &mut client,
                out: &mut out,
                multi: &mut Default::default(),
            };
            let mut batch = Batch::default();
            dispatch(Args::new(&buf, &ranges), &mut cx, &mut batch);
            batch.write(&mut cx);
            String::from_utf8(out).unwrap()
        }
    }

    fn off(line: &str) -> String {
        Server::new(ClusterMode::Off).reply(Version::Resp2, None, line)
    }

    /// Without the mode, as a redis-server without cluster support answers (7.0.15): names
    /// and arities are checked first, then every subcommand is refused.
    #[test]
    fn without_the_mode_cluster_is_disabled_as_in_redis() {
        for line in [
            "CLUSTER INFO",
            "cluster slots",
            "CLUSTER SHARDS",
            "CLUSTER NODES",
            "CLUSTER MYID",
            "CLUSTER KEYSLOT foo",
            "CLUSTER HELP",
        ] {
            assert_eq!(
                off(line),
                "-ERR This instance has cluster support disabled\r\n",
                "{line}"
            );
        }
        assert_eq!(
            off("CLUSTER foo"),
            "-ERR unknown subcommand 'foo'. Try CLUSTER HELP.\r\n"
        );
        assert_eq!(
            off("CLUSTER KEYSLOT"),
            "-ERR wrong number of arguments for 'cluster|keyslot' command\r\n"
        );
        assert_eq!(
            off("CLUSTER"),
            "-ERR wrong number of arguments for 'cluster' command\r\n"
        );
    }

    #[test]
    fn an_emulated_node_owns_every_slot_at_the_address_the_client_used() {
        let at = Some("10.77.0.11:6379");
        let server = Server::new(ClusterMode::Emulated);
        let on = |version, line: &str| server.reply(version, at, line);
        let id = on(Version::Resp2, "CLUSTER MYID");
        let id = id
            .strip_prefix("$40\r\n")
            .and_then(|rest| rest.strip_suffix("\r\n"))
            .unwrap_or_else(|| panic!("MYID: {id:?}"))
            .to_string();
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let node = format!("$10\r\n10.77.0.11\r\n:6379\r\n$40\r\n{id}\r\n");
        assert_eq!(
            on(Version::Resp2, "CLUSTER SLOTS"),
            format!("*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n{node}*0\r\n")
        );
        assert_eq!(
            on(Version::Resp3, "cluster slots"),
            format!("*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n{node}%0\r\n")
        );
        let fields = format!(
            "$2\r\nid\r\n$40\r\n{id}\r\n$4\r\nport\r\n:6379\r\n$2\r\nip\r\n$10\r\n10.77.0.11\r\n\
             $8\r\nendpoint\r\n$10\r\n10.77.0.11\r\n$4\r\nrole\r\n$6\r\nmaster\r\n\
             $18\r\nreplication-offset\r\n:0\r\n$6\r\nhealth\r\n$6\r\nonline\r\n"
        );
        let slots = "$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n";
        assert_eq!(
            on(Version::Resp2, "CLUSTER SHARDS"),
            format!("*1\r\n*4\r\n{slots}*14\r\n{fields}")
        );
        assert_eq!(
            on(Version::Resp3, "CLUSTER SHARDS"),
            format!("*1\r\n%2\r\n{slots}%7\r\n{fields}")
        );
        let line = format!("{id} 10.77.0.11:6379@0 myself,master - 0 0 0 connected 0-16383\n");
        assert_eq!(
            on(Version::Resp2, "CLUSTER NODES"),
            format!("${}\r\n{line}\r\n", line.len())
        );
        let info = on(Version::Resp2, "CLUSTER INFO");
        for field in [
            "cluster_state:ok\r\n",
            "cluster_slots_assigned:16384\r\n",
            "cluster_slots_ok:16384\r\n",
            "cluster_known_nodes:1\r\n",
            "cluster_size:1\r\n",
        ] {
            assert!(info.contains(field), "{info}");
        }
        assert_eq!(on(Version::Resp2, "CLUSTER KEYSLOT foo"), ":12182\r\n");
        assert_eq!(
            on(Version::Resp2, "CLUSTER KEYSLOT {user1000}.following"),
            ":3443\r\n"
        );
        let help = on(Version::Resp2, "CLUSTER HELP");
        assert!(help.starts_with(&format!("*{}\r\n+CLUSTER <subcommand>", super::HELP.len())));
        assert!(help.contains("+KEYSLOT <key>\r\n"), "{help}");
        assert_eq!(
            on(Version::Resp2, "CLUSTER MYID x"),
            "-ERR wrong number of arguments for 'cluster|myid' command\r\n"
        );
        assert_eq!(
            on(Version::Resp2, "CLUSTER ADDSLOTS 1"),
            "-ERR unknown subcommand 'ADDSLOTS'. Try CLUSTER HELP.\r\n"
        );
        // The ID is the server's, the same on every request; another server draws another.
        assert_eq!(
            on(Version::Resp2, "CLUSTER MYID"),
            format!("$40\r\n{id}\r\n")
        );
        let other = Server::new(ClusterMode::Emulated).reply(Version::Resp2, at, "CLUSTER MYID");
        assert_ne!(other, format!("$40\r\n{id}\r\n"));
        // A client that reached it elsewhere is told that address.
        let slots = server.reply(Version::Resp2, Some("[::1]:7001"), "CLUSTER SLOTS");
        assert!(slots.contains("$3\r\n::1\r\n:7001\r\n"), "{slots}");
    }
}
