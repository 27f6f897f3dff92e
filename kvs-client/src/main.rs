//! `kvs-client`: sets, gets and removes keys on a kvs server.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kvs::{KvsClient, KvsError};

#[derive(Parser, Debug)]
#[command(name = "kvs-client", version, about = "Talks to a kvs server.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Set KEY to VALUE.
    Set {
        /// The key. It may start with '-'; put `--` before one spelled --addr, -h or --help.
        #[arg(allow_hyphen_values = true)]
        key: String,
        /// The value. It may start with '-', as the key.
        #[arg(allow_hyphen_values = true)]
        value: String,
        #[command(flatten)]
        server: Server,
    },
    /// Print the value of KEY, or "Key not found".
    Get {
        /// The key. It may start with '-'; put `--` before one spelled --addr, -h or --help.
        #[arg(allow_hyphen_values = true)]
        key: String,
        #[command(flatten)]
        server: Server,
    },
    /// Remove KEY; fails with "Key not found" if it is not set.
    Rm {
        /// The key. It may start with '-'; put `--` before one spelled --addr, -h or --help.
        #[arg(allow_hyphen_values = true)]
        key: String,
        #[command(flatten)]
        server: Server,
    },
}

#[derive(clap::Args, Debug)]
struct Server {
    /// Address of the server, IPv4 or IPv6 IP:PORT.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:4000")]
    addr: SocketAddr,

    /// The server's password (kvs-server --requirepass). It shows in `ps`: prefer the
    /// KVS_PASSWORD environment variable, used when this flag is not given.
    #[arg(long, value_name = "PASSWORD")]
    password: Option<String>,
}

/// The environment variable that holds the password when `--password` is not given.
const PASSWORD_VAR: &str = "KVS_PASSWORD";

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kvs-client: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> kvs::Result<ExitCode> {
    match command {
        Command::Set { key, value, server } => {
            connect(server)?.set(key, value)?;
        }
        Command::Get { key, server } => {
            let value = connect(server)?.get_bytes(key.as_bytes())?;
            let mut stdout = std::io::stdout().lock();
            match value {
                Some(value) => {
                    stdout.write_all(&value)?;
                    stdout.write_all(b"\n")?;
                }
                None => stdout.write_all(b"Key not found\n")?,
            }
            stdout.flush()?;
        }
        Command::Rm { key, server } => match connect(server)?.remove(key) {
            Ok(()) => {}
            Err(KvsError::KeyNotFound) => {
                eprintln!("Key not found");
                return Ok(ExitCode::FAILURE);
            }
            Err(e) => return Err(e),
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn connect(server: Server) -> kvs::Result<KvsClient> {
    let mut client = KvsClient::connect(server.addr)?;
    // A server that stops answering should not hang a script for ever.
    client.set_timeout(Some(std::time::Duration::from_secs(60)))?;
    let password = match server.password {
        Some(password) => Some(password.into_bytes()),
        None => {
            use std::os::unix::ffi::OsStringExt;
            std::env::var_os(PASSWORD_VAR).map(OsStringExt::into_vec)
        }
    };
    if let Some(password) = password {
        client.auth(&password)?;
    }
    Ok(client)
}
