//! Tests that cross crates: the binaries end to end, C and Python against the real library.
//!
//! This library is the support the end-to-end tests in `tests/` share:
//! - [`binaries`]: finds (and if needed builds) the real `kvs-server`, `kvs-client` and
//!   `kvs-admin`;
//! - [`server`]: runs `kvs-server` in a directory on a port the OS picks, and stops it;
//! - [`redis`]: runs a real `redis-server`, where installed, to compare kvs with;
//! - [`resp`]: [`resp::Frame`], a RESP reply as a client reads it, to check what servers say;
//! - [`hosts`]: several hosts on one machine (network namespaces, else loopback addresses);
//! - [`nutcracker`]: twemproxy, the sharding proxy, in front of them;
//! - [`python`]: the Python with redis-py.

pub mod binaries;
pub mod hosts;
pub mod nutcracker;
pub mod python;
pub mod redis;
pub mod resp;
pub mod server;

pub use binaries::{client, kvs_admin, kvs_client, kvs_server};
pub use server::ServerProcess;
