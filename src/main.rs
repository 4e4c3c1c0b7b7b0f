//! The `actormq` command: runs the broker (`actormq serve`, the default) or talks to a
//! running one (declare, bind, publish, consume, ...). See `actormq --help`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
