//! Credentials: where the password comes from, and `hash-password`.
//!
//! A password on the command line is visible to every user through `ps`, so it may also
//! come from a file (`--password-file`), the `ACTORMQ_PASSWORD` variable, or a prompt.
//! The prompt turns the terminal's echo off through `libc`'s termios calls (already a
//! dependency), which is all a password prompt needs; a crate for it would add nothing.

use super::flags::ConnFlags;
use super::Error;
use actormq::client::ConnectOptions;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

/// The variable a password may come from.
pub const PASSWORD_VAR: &str = "ACTORMQ_PASSWORD";
/// The user (and password) when none is given, as in RabbitMQ.
const DEFAULT_USER: &str = "guest";

/// The client's options for these flags, the password resolved (see [`password`]).
pub fn connect_options(conn: ConnFlags) -> Result<ConnectOptions, Error> {
    let tls = conn.tls || conn.ca_file.is_some() || conn.cert_file.is_some();
    let port = if tls {
        actormq::client::DEFAULT_TLS_PORT
    } else {
        actormq::client::DEFAULT_PORT
    };
    let server = conn
        .server
        .clone()
        .unwrap_or_else(|| format!("127.0.0.1:{port}"));
    let user = conn
        .user
        .clone()
        .unwrap_or_else(|| DEFAULT_USER.to_string());
    // A client certificate and no password: log in as the certificate's user
    // (EXTERNAL), as RabbitMQ's clients do with rabbitmq_auth_mechanism_ssl.
    let external = conn.cert_file.is_some()
        && conn.password.is_none()
        && conn.password_file.is_none()
        && std::env::var_os(PASSWORD_VAR).is_none();
    let password = if external {
        String::new()
    } else {
        password(&conn, &user)?
    };
    let vhost = conn.vhost.unwrap_or_else(|| "/".to_string());
    let tls = tls.then(|| actormq::client::TlsOptions {
        ca_file: conn.ca_file.clone(),
        cert_file: conn.cert_file.clone(),
        key_file: conn.key_file.clone(),
        server_name: None,
    });
    Ok(ConnectOptions {
        tls,
        external,
        ..ConnectOptions::new(server)
            .credentials(user, password)
            .vhost(vhost)
    })
}

/// The password, from the first of: `--password`, `--password-file`, `ACTORMQ_PASSWORD`;
/// else `guest` for the user guest; else a prompt when standard input is a terminal.
pub(crate) fn password(conn: &ConnFlags, user: &str) -> Result<String, Error> {
    if let Some(p) = &conn.password {
        return Ok(p.clone());
    }
    if let Some(path) = &conn.password_file {
        return read_password_file(path);
    }
    if let Ok(p) = std::env::var(PASSWORD_VAR) {
        return Ok(p);
    }
    if user == DEFAULT_USER {
        return Ok(DEFAULT_USER.to_string());
    }
    if std::io::stdin().is_terminal() {
        return Ok(prompt(&format!("Password for {user}: "))?);
    }
    Err(format!(
        "no password for user '{user}': give --password-file FILE or set {PASSWORD_VAR} \
         (or run from a terminal to be asked)"
    )
    .into())
}

/// The first line of `path`, without its line ending.
fn read_password_file(path: &Path) -> Result<String, Error> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("--password-file {}: {e}", path.display()))?;
    let mut line = String::new();
    std::io::BufReader::new(file)
        .read_line(&mut line)
        .map_err(|e| format!("--password-file {}: {e}", path.display()))?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(format!(
            "--password-file {}: the first line is empty",
            path.display()
        )
        .into());
    }
    Ok(password.to_string())
}

/// Asks for a line on the terminal (standard input) without echoing it.
///
/// Echo is restored before returning; a process killed at the prompt (Ctrl-C) leaves it
/// off, as most prompts do (`reset` or `stty echo` restores it).
#[cfg(unix)]
fn prompt(question: &str) -> std::io::Result<String> {
    let mut err = std::io::stderr();
    err.write_all(question.as_bytes())?;
    err.flush()?;
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr fills it for a terminal descriptor.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    // Still echo the newline, so what follows starts on its own line.
    quiet.c_lflag |= libc::ECHONL;
    // SAFETY: a valid termios for the same descriptor.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    // SAFETY: restores the settings read above.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(not(unix))]
fn prompt(_question: &str) -> std::io::Result<String> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "no password prompt on this platform: use --password-file or ACTORMQ_PASSWORD",
    ))
}

/// `hash-password`: the argument; else a prompt on a terminal; else the first line of
/// standard input.
pub fn hash_password(secret: Option<String>) -> Result<(), Error> {
    let password = match secret {
        Some(p) => p,
        None if std::io::stdin().is_terminal() => prompt("Password to hash: ")?,
        None => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    println!("{}", actormq::server::auth::hash_password(&password));
    Ok(())
}
