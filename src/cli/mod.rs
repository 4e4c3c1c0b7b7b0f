//! The `actormq` command line: argument types in [`args`], the client commands in
//! [`commands`]. `serve` (and no subcommand) hands over to the server's own entry point.
//!
//! Exit status: 0 on success; 1 with `error: ...` on standard error otherwise, where a
//! broker refusal reads `error: CODE - message` (e.g. `error: NOT_FOUND - no queue 'q'
//! in vhost '/'`); 2 for a command line clap refuses.

mod args;
mod commands;

use args::{Cli, Command};
use clap::Parser;
use std::io::{BufRead, Write};
use std::process::ExitCode;

/// Parses the command line, runs the command, reports the outcome as the exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Errors of a command, printed after `error: `.
type Error = Box<dyn std::error::Error>;

fn run(cli: Cli) -> Result<(), Error> {
    let Cli {
        server,
        user,
        password,
        vhost,
        command,
    } = cli;
    let command = match command {
        None => return actormq::server::run_cli_serve(None),
        Some(Command::Serve { config }) => return actormq::server::run_cli_serve(config),
        Some(Command::HashPassword { secret }) => return hash_password(secret),
        Some(Command::Perf(args)) => return perf(server, user, password, vhost, args),
        Some(c) => c,
    };
    let options = actormq::client::ConnectOptions::new(server)
        .credentials(user, password)
        .vhost(vhost);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(commands::run(options, command))
}

/// `perf`: runs the load and prints the report (a table, or JSON with --json).
fn perf(
    server: String,
    user: String,
    password: String,
    vhost: String,
    args: actormq::perf::PerfArgs,
) -> Result<(), Error> {
    let options = actormq::client::ConnectOptions::new(server)
        .credentials(user, password)
        .vhost(vhost);
    // One thread by default: the load generator must stay lean beside the broker on
    // few cores.
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    let json = args.json;
    let report = match args.amqp_url.clone() {
        #[cfg(feature = "amqp")]
        Some(url) => rt.block_on(actormq::perf::run_amqp(args, url))?,
        #[cfg(not(feature = "amqp"))]
        Some(_) => return Err("--amqp-url needs a build with `--features amqp`".into()),
        None => rt.block_on(actormq::perf::run(args, options))?,
    };
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// `hash-password`: the argument, or the first line of standard input.
fn hash_password(password: Option<String>) -> Result<(), Error> {
    let password = match password {
        Some(p) => p,
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
