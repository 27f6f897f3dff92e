//! [`KvsClient`]: one connection to a kvs server, reused for every request.

use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use crate::process::{ProcessGuard, CLIENT};
use crate::protocol::{
    frame, List, Op, Password, Request, Response, DEFAULT_MAX_FRAME_LEN, HEADER_LEN,
};
use crate::server::sniff::MAX_KVS_FRAME_LEN;
use crate::{ErrorKind, KeyExpiry, KvsError, Result, ScanFilter, ScanPage, WriteBatch};

/// How long [`KvsClient::connect`] waits for each address to accept the connection.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of a kvs server: one TCP connection, reused for every request.
///
/// Errors, so that callers can act on them:
/// - [`KvsError::Connect`]: the server could not be reached (the message names the address).
/// - [`KvsError::ConnectionLost`]: the connection broke or timed out during a request; the
///   request may or may not have been carried out. The next request connects again.
/// - [`KvsError::KeyNotFound`]: `remove` of a key that is not set.
/// - [`KvsError::Remote`]: any other error reported by the server, with its
///   [`ErrorKind`].
/// - [`KvsError::Protocol`]: the server sent something that is not a valid response (the
///   connection is dropped). When the answer cannot come from any kvs server (text, as an
///   HTTP, SMTP or Redis server answers), the message says that the server at the address is
///   not a kvs server and quotes what it answered.
/// - [`KvsError::InvalidArgument`]: the request is over the frame limit and was not sent.
/// - [`KvsError::Forked`]: this is a child of the process that connected (made by `fork()`):
///   parent and child would share one TCP stream and interleave their frames. A client
///   belongs to the process that connected it; connect again in the child. Dropping the
///   inherited client only closes the child's copy of the socket.
///
/// ```no_run
/// # fn main() -> kvs::Result<()> {
/// let mut client = kvs::KvsClient::connect("127.0.0.1:4000")?;
/// client.set("key".to_owned(), "value".to_owned())?;
/// assert_eq!(client.get("key".to_owned())?, Some("value".to_owned()));
/// client.remove("key".to_owned())?;
/// # Ok(()) }
/// ```
pub struct KvsClient {
    /// The addresses as resolved at connect time, for messages and reconnecting.
    addrs: Vec<SocketAddr>,
    name: String,
    stream: Option<BufReader<TcpStream>>,
    connect_timeout: Duration,
    timeout: Option<Duration>,
    max_frame_len: usize,
    /// Buffers reused across requests.
    out: Vec<u8>,
    payload: Vec<u8>,
    /// The process that connected: a child of `fork()` shares the socket and must not use it.
    process: ProcessGuard,
    /// The password given with [`auth`](KvsClient::auth), given again on every reconnection.
    /// Never shown by `Debug`.
    password: Option<Vec<u8>>,
}

impl std::fmt::Debug for KvsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvsClient")
            .field("addr", &self.name)
            .field("connected", &self.stream.is_some())
            .field("timeout", &self.timeout)
            .field("password", &self.password.as_ref().map(|_| ".."))
            .finish()
    }
}

impl KvsClient {
    /// Connects to the server at `addr` (trying each address it resolves to, waiting up to
    /// 10 seconds for each). Fails with [`KvsError::Connect`], naming the
    /// address.
    pub fn connect(addr: impl ToSocketAddrs) -> Result<KvsClient> {
        KvsClient::connect_timeout(addr, DEFAULT_CONNECT_TIMEOUT)
    }

    /// Like [`connect`](KvsClient::connect), waiting up to `timeout` for each address.
    pub fn connect_timeout(addr: impl ToSocketAddrs, timeout: Duration) -> Result<KvsClient> {
        let addrs: Vec<SocketAddr> = match addr.to_socket_addrs() {
            Ok(addrs) => addrs.collect(),
            Err(source) => {
                return Err(KvsError::Connect {
                    addr: "the given address".to_string(),
                    source,
                })
            }
        };
        let name = match addrs.as_slice() {
            [one] => one.to_string(),
            many => many
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(" or "),
        };
        let mut client = KvsClient {
            addrs,
            name,
            stream: None,
            connect_timeout: timeout,
            timeout: None,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            out: Vec::new(),
            payload: Vec::new(),
            process: ProcessGuard::current(CLIENT),
            password: None,
        };
        client.reconnect()?;
        Ok(client)
    }

    /// The server's address, as errors name it.
    pub fn addr(&self) -> &str {
        &self.name
    }

    /// Sets how long a request may wait on the network (sending or receiving) before failing
    /// with [`KvsError::ConnectionLost`]. `None` (the default) waits forever.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        if timeout == Some(Duration::ZERO) {
            return Err(KvsError::InvalidArgument(
                "a timeout must be longer than zero".to_string(),
            ));
        }
        self.process.check()?;
        self.timeout = timeout;
        if let Some(stream) = &self.stream {
            apply_timeout(stream.get_ref(), timeout).map_err(|e| self.lost(e))?;
        }
        Ok(())
    }

    /// Sets the largest frame this client sends or accepts (default
    /// [`DEFAULT_MAX_FRAME_LEN`]). The server has its own limit.
    pub fn set_max_frame_len(&mut self, max_len: usize) {
        self.max_frame_len = max_len;
    }

    /// Sets `key` to `value`.
    pub fn set(&mut self, key: String, value: String) -> Result<()> {
        self.set_bytes(key.as_bytes(), value.as_bytes())
    }

    /// The value of `key`, or `None`. A value that is not UTF-8 is [`KvsError::NotUtf8`].
    pub fn get(&mut self, key: String) -> Result<Option<String>> {
        match self.get_bytes(key.as_bytes())? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| KvsError::NotUtf8 { key }),
        }
    }

    /// Removes `key`; [`KvsError::KeyNotFound`] if it is not set.
    pub fn remove(&mut self, key: String) -> Result<()> {
        self.remove_bytes(key.as_bytes())
    }

    /// Sets `key` to `value` (binary form of [`set`](KvsClient::set)).
    pub fn set_bytes(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.call(Request::Set { key, value }, expect_ok)
    }

    /// The value of `key` (binary form of [`get`](KvsClient::get)).
    pub fn get_bytes(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.call(Request::Get { key }, |response| match response {
            Response::Value(value) => Ok(value.map(<[u8]>::to_vec)),
            other => Err(unexpected(other)),
        })
    }

    /// Removes `key` (binary form of [`remove`](KvsClient::remove)).
    pub fn remove_bytes(&mut self, key: &[u8]) -> Result<()> {
        self.call(Request::Remove { key }, expect_ok)
    }

    /// Sets `key` to `new` (removes it when `new` is `None`) if and only if its value on the
    /// server is `expected` (`None`: not set), atomically with respect to every other client.
    /// `Ok(true)` when it swapped, `Ok(false)` when the value was something else (nothing was
    /// written then). See
    /// [`KvsEngine::compare_and_set_bytes`](crate::KvsEngine::compare_and_set_bytes).
    ///
    /// A server older than this request answers it with a protocol error.
    pub fn compare_and_set_bytes(
        &mut self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        self.call(
            Request::CompareAndSet { key, expected, new },
            |response| match response {
                Response::Swapped(swapped) => Ok(swapped),
                other => Err(unexpected(other)),
            },
        )
    }

    /// Atomically replaces the value of `key` with `f(current)` (`None` in: not set; `None`
    /// out: remove it) and returns the new value, as
    /// [`KvsEngine::update_bytes`](crate::KvsEngine::update_bytes) does, as a loop on this
    /// side: read the value, compute `f`, and [`compare_and_set_bytes`] it, again from the
    /// read when another client changed the key in between. So **`f` may run more than
    /// once** (only the last call's result is stored) and must not count on running once.
    /// When `f` returns the value it was given, nothing is written. The key keeps its
    /// deadline.
    ///
    /// [`compare_and_set_bytes`]: KvsClient::compare_and_set_bytes
    pub fn update_bytes<F>(&mut self, key: &[u8], mut f: F) -> Result<Option<Vec<u8>>>
    where
        F: FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    {
        loop {
            let current = self.get_bytes(key)?;
            let new = f(current.as_deref());
            if new == current {
                return Ok(new);
            }
            if self.compare_and_set_bytes(key, current.as_deref(), new.as_deref())? {
                return Ok(new);
            }
        }
    }

    /// Applies every operation of `batch` on the server as one atomic write: all of it or
    /// none of it, as [`KvsEngine::apply_batch`](crate::KvsEngine::apply_batch) does. An
    /// `Ok` is acknowledged as a `set` is. A batch over the frame limit is
    /// [`KvsError::InvalidArgument`] and is not sent.
    pub fn apply_batch(&mut self, batch: &WriteBatch) -> Result<()> {
        let ops: Vec<Op<'_>> = batch.ops().iter().map(Op::from).collect();
        self.call(
            Request::ApplyBatch {
                ops: List::new(&ops),
            },
            expect_ok,
        )
    }

    /// The values of `keys`, in order (`None`: not set), read on the server at one instant
    /// ([`KvsEngine::get_many_bytes`](crate::KvsEngine::get_many_bytes)). Values that do not
    /// fit in one reply frame all together are refused (a [`KvsError::Remote`] of kind
    /// [`ErrorKind::InvalidArgument`]): ask for fewer keys at a time.
    pub fn get_many_bytes(&mut self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let asked = keys.len();
        self.call(
            Request::GetMany {
                keys: List::new(keys),
            },
            |response| match response {
                Response::Values(values) => {
                    let values: Vec<Option<Vec<u8>>> =
                        values.iter().map(|v| v.map(<[u8]>::to_vec)).collect();
                    if values.len() == asked {
                        Ok(values)
                    } else {
                        Err(KvsError::Protocol(format!(
                            "asked for {asked} values, the server answered {}",
                            values.len()
                        )))
                    }
                }
                other => Err(unexpected(other)),
            },
        )
    }

    /// Sets `key` to `value`, expiring at `deadline` (milliseconds since the Unix epoch, on
    /// the server's clock; see [`deadline_after`](crate::deadline_after)), as
    /// [`KvsEngine::set_with_deadline_bytes`](crate::KvsEngine::set_with_deadline_bytes).
    pub fn set_with_deadline_bytes(
        &mut self,
        key: &[u8],
        value: &[u8],
        deadline: u64,
    ) -> Result<()> {
        self.call(
            Request::SetWithDeadline {
                key,
                value,
                deadline,
            },
            expect_ok,
        )
    }

    /// Gives the existing `key` the deadline `deadline`; whether the key was set, as
    /// [`KvsEngine::expire_at_bytes`](crate::KvsEngine::expire_at_bytes).
    pub fn expire_at_bytes(&mut self, key: &[u8], deadline: u64) -> Result<bool> {
        self.call(Request::ExpireAt { key, deadline }, expect_bool)
    }

    /// Removes the deadline of `key`; whether it had one, as
    /// [`KvsEngine::persist_bytes`](crate::KvsEngine::persist_bytes).
    pub fn persist_bytes(&mut self, key: &[u8]) -> Result<bool> {
        self.call(Request::Persist { key }, expect_bool)
    }

    /// Whether `key` is set, and its deadline if it has one, as
    /// [`KvsEngine::expiry_bytes`](crate::KvsEngine::expiry_bytes).
    pub fn expiry_bytes(&mut self, key: &[u8]) -> Result<KeyExpiry> {
        self.call(Request::Expiry { key }, |response| match response {
            Response::Expiry(expiry) => Ok(expiry),
            other => Err(unexpected(other)),
        })
    }

    /// One page of a walk over the server's keys that pass `filter`, with the guarantees of
    /// [`KvsEngine::scan_bytes`](crate::KvsEngine::scan_bytes): start with `cursor` 0 and pass
    /// each page's cursor to the next call, until it is 0. The server looks at no more than
    /// 65 536 keys per call, whatever `count` asks, and makes a page smaller when it would not
    /// fit in a reply frame: the walk then takes more pages.
    pub fn scan_bytes(
        &mut self,
        cursor: u64,
        count: usize,
        filter: &ScanFilter,
    ) -> Result<ScanPage> {
        let request = Request::Scan {
            cursor,
            count: u64::try_from(count).unwrap_or(u64::MAX),
            prefix: &filter.prefix,
            pattern: filter.pattern.as_deref(),
        };
        self.call(request, |response| match response {
            Response::Page { cursor, keys } => Ok(ScanPage {
                cursor,
                keys: keys.iter().map(<[u8]>::to_vec).collect(),
            }),
            other => Err(unexpected(other)),
        })
    }

    /// Writes an online checkpoint of the server's store into `dest`, as
    /// [`KvsEngine::checkpoint`](crate::KvsEngine::checkpoint) does. `dest` is a path on the
    /// **server's** machine, created by the server's process: its user must be able to write
    /// there, and a relative path starts in the server's working directory. A path that is not
    /// UTF-8 is [`KvsError::InvalidArgument`] (the protocol carries paths as text).
    pub fn checkpoint(&mut self, dest: &Path) -> Result<()> {
        let Some(path) = dest.to_str() else {
            return Err(KvsError::InvalidArgument(format!(
                "checkpoint path {} is not UTF-8; the kvs protocol carries paths as text",
                dest.display()
            )));
        };
        self.call(Request::Checkpoint { path }, expect_ok)
    }

    /// Gives the server's password (`kvs-server --requirepass`). A server with a password
    /// refuses every other request until then, with a [`KvsError::Remote`] of kind
    /// [`ErrorKind::InvalidArgument`] saying that a password is required; a wrong password is
    /// the same error, saying so. A server without a password takes any. The password is
    /// kept, and given again whenever the client connects again after a lost connection.
    ///
    /// A server older than this request answers it with a protocol error.
    pub fn auth(&mut self, password: &[u8]) -> Result<()> {
        self.password = None;
        self.call(
            Request::Auth {
                password: Password(password),
            },
            expect_ok,
        )?;
        self.password = Some(password.to_vec());
        Ok(())
    }

    /// Sends `request`, waits for its response and hands it to `answer`.
    fn call<T>(
        &mut self,
        request: Request<'_>,
        answer: impl FnOnce(Response<'_>) -> Result<T>,
    ) -> Result<T> {
        self.process.check()?;
        // Connecting again gives the password again, which uses the output buffer: before
        // the request is encoded into it.
        if self.stream.is_none() {
            self.reconnect()?;
        }
        self.out.clear();
        if let Err(e) = request.encode_frame(&mut self.out, self.max_frame_len) {
            return Err(KvsError::InvalidArgument(format!("request not sent: {e}")));
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(self.lost(io::ErrorKind::NotConnected.into()));
        };
        let exchanged = exchange(
            stream,
            &self.out,
            &mut self.payload,
            self.max_frame_len,
            &self.name,
        );
        let decoded = match exchanged {
            Ok(()) => Response::decode(&self.payload),
            Err(e) => Err(e),
        };
        match decoded {
            Ok(response) => {
                let result = match answer(response) {
                    Err(KvsError::Remote {
                        kind: ErrorKind::Protocol,
                        message,
                    }) if !request.is_original() && message.contains("malformed message") => {
                        Err(KvsError::Remote {
                            kind: ErrorKind::Protocol,
                            message: format!(
                                "the server at {} does not know the {} request (a kvs-server \
                                 older than this client answers so): {message}",
                                self.name,
                                request.name()
                            ),
                        })
                    }
                    other => other,
                };
                if let Err(KvsError::Remote {
                    kind: ErrorKind::Protocol,
                    ..
                }) = &result
                {
                    // The server closes a connection after a protocol error.
                    self.stream = None;
                }
                result
            }
            Err(e) => {
                // After a broken exchange the stream is out of step with the server: drop it,
                // the next request connects again.
                self.stream = None;
                Err(match e {
                    KvsError::Io(source) => self.lost(source),
                    other => other,
                })
            }
        }
    }

    fn reconnect(&mut self) -> Result<()> {
        let mut last_error =
            io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
        for addr in &self.addrs {
            match TcpStream::connect_timeout(addr, self.connect_timeout) {
                Ok(stream) => {
                    let configured = stream
                        .set_nodelay(true)
                        .and_then(|()| apply_timeout(&stream, self.timeout));
                    if let Err(source) = configured {
                        return Err(KvsError::Connect {
                            addr: self.name.clone(),
                            source,
                        });
                    }
                    self.stream = Some(BufReader::with_capacity(16 << 10, stream));
                    if let Some(password) = self.password.clone() {
                        self.call(
                            Request::Auth {
                                password: Password(&password),
                            },
                            expect_ok,
                        )?;
                    }
                    return Ok(());
                }
                Err(e) => last_error = e,
            }
        }
        Err(KvsError::Connect {
            addr: self.name.clone(),
            source: last_error,
        })
    }

    fn lost(&self, source: io::Error) -> KvsError {
        // A read timeout surfaces as WouldBlock on some systems; call it what it is.
        let source = if source.kind() == io::ErrorKind::WouldBlock {
            io::Error::new(io::ErrorKind::TimedOut, "timed out waiting for the server")
        } else if source.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )
        } else {
            source
        };
        KvsError::ConnectionLost {
            addr: self.name.clone(),
            source,
        }
    }
}

/// Writes one framed request and reads one response frame's payload into `payload`.
fn exchange(
    stream: &mut BufReader<TcpStream>,
    request: &[u8],
    payload: &mut Vec<u8>,
    max_len: usize,
    name: &str,
) -> Result<()> {
    stream.get_mut().write_all(request)?;
    let header = read_header(stream, name)?;
    let len = frame::payload_len(header, max_len)?;
    payload.clear();
    payload.resize(len, 0);
    stream.read_exact(payload)?;
    Ok(())
}

/// Reads a response frame's length prefix, and tells a server that is not a kvs server by it.
///
/// A kvs server never sends a frame longer than [`MAX_KVS_FRAME_LEN`] (it caps its limit
/// there), so the first byte of its replies is at most 0x08. Any line-based protocol answers
/// with text, whose first byte is above that: `HTTP/1.1 400` (a length of 1213486160),
/// `-ERR`, `+OK`, an SMTP or FTP greeting `220 `. Such an answer is refused as
/// [`KvsError::Protocol`] naming the address and quoting what came, not as an oversized frame.
fn read_header(stream: &mut BufReader<TcpStream>, name: &str) -> Result<[u8; HEADER_LEN]> {
    let mut header = [0; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match stream.read(&mut header[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let foreign = got > 0 && usize::from(header[0]) > MAX_KVS_FRAME_LEN >> 24;
    if foreign {
        // What else the server said, as far as it arrived with the header: no more waiting.
        let mut answer = header[..got].to_vec();
        answer.extend_from_slice(stream.buffer());
        return Err(KvsError::Protocol(format!(
            "the server at {name} is not a kvs server: it answered {}",
            describe_answer(&answer)
        )));
    }
    if got < HEADER_LEN {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
    }
    Ok(header)
}

/// The first line of a foreign server's answer, quoted and escaped, or its first bytes in hex
/// when it is not text.
fn describe_answer(answer: &[u8]) -> String {
    const SHOWN: usize = 80;
    let line = answer.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = line
        .iter()
        .all(|&b| b.is_ascii_graphic() || b == b' ' || b == b'\t');
    if text && !line.is_empty() {
        let shown = &line[..line.len().min(SHOWN)];
        let more = if line.len() > SHOWN { "..." } else { "" };
        format!("\"{}{more}\"", shown.escape_ascii())
    } else {
        let hex: Vec<String> = answer.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!("the bytes {}", hex.join(" "))
    }
}

fn apply_timeout(stream: &TcpStream, timeout: Option<Duration>) -> io::Result<()> {
    stream.set_read_timeout(timeout)?;
    stream.set_write_timeout(timeout)
}

fn expect_bool(response: Response<'_>) -> Result<bool> {
    match response {
        Response::Bool(answer) => Ok(answer),
        other => Err(unexpected(other)),
    }
}

fn expect_ok(response: Response<'_>) -> Result<()> {
    match response {
        Response::Ok => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// The error for any response but the expected one: a reported error, or a protocol violation.
fn unexpected(response: Response<'_>) -> KvsError {
    match response {
        Response::Error {
            kind: ErrorKind::KeyNotFound,
            ..
        } => KvsError::KeyNotFound,
        Response::Error { kind, message } => KvsError::Remote {
            kind,
            message: message.to_string(),
        },
        other => KvsError::Protocol(format!("unexpected response {other:?}")),
    }
}
