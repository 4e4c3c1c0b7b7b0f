//! The `actormq` command line: argument types in [`args`] and [`flags`], the client
//! commands in [`commands`], [`publish`] and [`consume`], message output in [`output`],
//! credentials in [`password`], and `serve` (also what no subcommand means) in [`serve`].
//!
//! Exit status: 0 on success; 1 with `error: ...` on standard error otherwise, where a
//! broker refusal reads `error: CODE - message` (e.g. `error: NOT_FOUND - no queue 'q'
//! in vhost '/'`); 2 for a command line clap refuses.

mod args;
mod cluster;
mod commands;
mod consume;
mod flags;
mod mgmt;
mod output;
mod password;
mod publish;
mod serve;

use args::{Cli, Command};
use clap::{CommandFactory, Parser};
use std::io::Write;
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
    let Cli { leading, command } = cli;
    let mut command = command.unwrap_or(Command::Serve { config: None });
    if let Command::Mgmt(mut m) = command {
        return run_mgmt(leading, &mut m).and_then(|()| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(mgmt::run(m))
        });
    }
    match command.conn_mut() {
        Some(conn) => *conn = leading.fill(std::mem::take(conn)),
        None => {
            if let Some(flag) = leading.any_given() {
                // `serve --server` used to be accepted and ignored: refuse it instead.
                let what = match command {
                    Command::Serve { .. } => "serve listens where server.bind says (Settings.toml or ACTORMQ__SERVER__BIND)",
                    Command::Cluster(_) => "cluster asks a node's cluster port (--node)",
                    _ => "hash-password talks to no broker",
                };
                Cli::command()
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!("{flag} is not a flag of this command: {what}"),
                    )
                    .exit();
            }
        }
    }
    match command {
        Command::Serve { config } => serve::run(config),
        Command::Cluster(c) => cluster::run(c),
        Command::HashPassword { secret } => password::hash_password(secret),
        Command::Perf { conn, args } => perf(password::connect_options(conn)?, args),
        mut command => {
            let conn = std::mem::take(command.conn_mut().expect("a client command"));
            let options = password::connect_options(conn)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(commands::run(options, command))
        }
    }
}

/// Gives an operating command the connection flags given before it (but --server: the
/// management API is at --http-url).
fn run_mgmt(leading: flags::LeadingConnFlags, m: &mut mgmt::MgmtCommand) -> Result<(), Error> {
    if leading.server.is_some() {
        return Err("--server names the native protocol's address: operating commands talk to the management API, give --http-url".into());
    }
    let f = m.flags_mut();
    f.user = f.user.take().or(leading.user);
    f.password = f.password.take().or(leading.password);
    f.password_file = f.password_file.take().or(leading.password_file);
    f.vhost = f.vhost.take().or(leading.vhost);
    Ok(())
}

/// SIGINT or SIGTERM, whichever comes first (never, if neither can be watched).
#[cfg(unix)]
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// Ctrl-C (never, if it cannot be watched).
#[cfg(not(unix))]
async fn stop_signal() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// `perf`: runs the load and prints the report (a table, or JSON with --json).
fn perf(
    options: actormq::client::ConnectOptions,
    args: actormq::perf::PerfArgs,
) -> Result<(), Error> {
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
    // A failover run ends early, and still checks the queue, on SIGINT or SIGTERM: a
    // script that injects faults for a number of steps stops it when they are done.
    let watch = std::sync::Arc::new(actormq::perf::Watch::default());
    if args.failover {
        let watch = watch.clone();
        rt.spawn(async move {
            stop_signal().await;
            eprintln!("perf: stopping the failover run; checking the queue");
            watch.stop();
        });
    }
    let report = match args.amqp_url.clone() {
        Some(url) => rt.block_on(actormq::perf::run_amqp_watching(args, url, watch))?,
        None => rt.block_on(actormq::perf::run_watching(args, options, watch))?,
    };
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
