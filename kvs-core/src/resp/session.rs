//! A RESP connection's request loop: cuts requests out of the received bytes, carries them
//! out in order and appends their replies. The server's connection owns the buffers and the
//! socket; this owns the parsing state between reads.

use super::command::{Args, Client, Command, Outcome};
use super::frame::{write_error, Limits, RequestParser, RequestStatus, Version};
use super::state::ServerState;
use crate::{KvsEngine, KvsError, Result};

/// The RESP state of one connection.
#[derive(Debug, Clone)]
pub struct Session {
    parser: RequestParser,
    client: Client,
    /// Bytes the request being received needs at least, once known.
    needed: Option<usize>,
}

/// What [`Session::serve`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of input used up by the requests carried out.
    pub consumed: usize,
    /// How many requests were carried out.
    pub requests: usize,
    /// A `QUIT` was carried out: send the replies, then close. Input after it is ignored.
    pub close: bool,
}

impl Session {
    /// A session for the connection numbered `id`, refusing requests over `limits`. It
    /// speaks RESP2 until the client says `HELLO 3`.
    pub fn new(limits: Limits, id: u64) -> Session {
        Session {
            parser: RequestParser::new(limits),
            client: Client {
                id,
                version: Version::Resp2,
            },
            needed: None,
        }
    }

    /// Carries out the complete requests at the start of `input`, appending replies to `out`,
    /// until the input holds no complete request, a `QUIT` was seen, or `out` has grown by
    /// `budget` bytes (the rest waits until the client reads its replies).
    ///
    /// An error means the stream is malformed: [`write_refusal`] says why, and the
    /// connection must be closed (RESP cannot resynchronise).
    pub fn serve<E: KvsEngine>(
        &mut self,
        engine: &E,
        state: &ServerState,
        input: &[u8],
        out: &mut Vec<u8>,
        budget: usize,
    ) -> Result<Progress> {
        let out_start = out.len();
        let mut progress = Progress {
            consumed: 0,
            requests: 0,
            close: false,
        };
        while out.len() - out_start < budget {
            let request = &input[progress.consumed..];
            match self.parser.parse(request)? {
                RequestStatus::Incomplete { needed } => {
                    self.needed = Some(needed);
                    break;
                }
                RequestStatus::Complete { end } => {
                    self.needed = None;
                    let args = Args::new(request, self.parser.args());
                    if is_http(args) {
                        return Err(KvsError::Protocol(
                            "Protocol error: an HTTP request, not RESP; closing".to_string(),
                        ));
                    }
                    let outcome = if args.is_empty() {
                        Outcome::Continue
                    } else {
                        match Command::parse(args) {
                            Ok(command) => command.apply(engine, state, &mut self.client, out),
                            Err(message) => {
                                write_error(out, &message);
                                Outcome::Continue
                            }
                        }
                    };
                    self.parser.reset();
                    progress.consumed += end;
                    progress.requests += 1;
                    if outcome == Outcome::Close {
                        progress.close = true;
                        break;
                    }
                }
            }
        }
        Ok(progress)
    }

    /// How many bytes the request being received needs, counted from its start, when more
    /// than a header is known (so that the reader can make room for a long value at once).
    pub fn needed(&self) -> Option<usize> {
        self.needed.filter(|_| self.parser.is_started())
    }
}

/// Whether a request is a line of HTTP (`POST ...` or a `Host:` header): a browser or an HTTP
/// client pointed at the server, or a web page trying to reach it across protocols. Redis
/// closes such connections instead of answering line after line of headers; so does kvs.
fn is_http(args: Args<'_>) -> bool {
    let name = args.get(0);
    name.eq_ignore_ascii_case(b"post") || name.eq_ignore_ascii_case(b"host:")
}

/// Appends the reply to a malformed stream, as Redis sends it before closing: `-ERR
/// Protocol error: ...`.
pub fn write_refusal(out: &mut Vec<u8>, err: &KvsError) {
    match err {
        KvsError::Protocol(message) => write_error(out, &format!("ERR {message}")),
        other => write_error(out, &format!("ERR {other}")),
    }
}
