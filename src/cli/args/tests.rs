//! Parsing of the command line: flags, defaults, conflicts.

use super::*;
use actormq::FieldValue;

fn parse(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("actormq").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn refused(args: &[&str]) -> clap::error::ErrorKind {
    Cli::try_parse_from(std::iter::once("actormq").chain(args.iter().copied()))
        .expect_err("refused")
        .kind()
}

#[test]
fn key_values_are_typed_like_rabbitmq_tools() {
    assert_eq!(
        parse_key_value("x-message-ttl=60000"),
        Ok(("x-message-ttl".into(), FieldValue::Int(60000)))
    );
    assert_eq!(
        parse_key_value("x-single-active-consumer=true"),
        Ok(("x-single-active-consumer".into(), FieldValue::Bool(true)))
    );
    assert_eq!(
        parse_key_value("x-queue-type=quorum"),
        Ok(("x-queue-type".into(), FieldValue::Str("quorum".into())))
    );
    assert_eq!(
        parse_key_value("k=a=b"),
        Ok(("k".into(), FieldValue::Str("a=b".into())))
    );
    assert!(parse_key_value("novalue").is_err());
    assert!(parse_key_value("=v").is_err());
}

#[test]
fn no_subcommand_means_serve() {
    let cli = parse(&[]);
    assert!(cli.command.is_none());
    assert!(cli.leading.any_given().is_none());
}

#[test]
fn connection_flags_go_before_or_after_the_subcommand() {
    let cli = parse(&["--server", "h:1", "purge", "q", "--vhost", "v"]);
    assert_eq!(cli.leading.server.as_deref(), Some("h:1"));
    let Some(Command::Purge { conn, name }) = cli.command else {
        panic!("not purge")
    };
    assert_eq!(name, "q");
    let conn = cli.leading.fill(conn);
    assert_eq!(conn.server.as_deref(), Some("h:1"));
    assert_eq!(conn.vhost.as_deref(), Some("v"));
    // After the subcommand wins.
    let cli = parse(&["--server", "h:1", "purge", "q", "--server", "h:2"]);
    let Some(Command::Purge { conn, .. }) = cli.command else {
        panic!("not purge")
    };
    assert_eq!(cli.leading.fill(conn).server.as_deref(), Some("h:2"));
}

#[test]
fn serve_and_hash_password_take_only_their_own_flags() {
    use clap::error::ErrorKind::UnknownArgument;
    assert_eq!(refused(&["serve", "--server", "h:1"]), UnknownArgument);
    assert_eq!(refused(&["serve", "--user", "u"]), UnknownArgument);
    assert_eq!(
        refused(&["hash-password", "--password", "p"]),
        UnknownArgument
    );
    let cli = parse(&["serve", "--config", "x.toml"]);
    assert!(matches!(
        cli.command,
        Some(Command::Serve { config: Some(_) })
    ));
    let cli = parse(&["hash-password", "s"]);
    assert!(matches!(cli.command, Some(Command::HashPassword { secret: Some(s) }) if s == "s"));
}

#[test]
fn declare_queue_takes_flags_and_repeated_args_and_refuses_an_empty_name() {
    let cli = parse(&[
        "declare-queue",
        "q",
        "--durable",
        "--passive",
        "--arg",
        "x-message-ttl=60000",
    ]);
    let Some(Command::DeclareQueue {
        name,
        durable,
        passive,
        args,
        ..
    }) = cli.command
    else {
        panic!("not declare-queue")
    };
    assert_eq!(name, "q");
    assert!(durable && passive);
    assert_eq!(args, vec![("x-message-ttl".into(), FieldValue::Int(60000))]);
    assert_eq!(
        refused(&["declare-queue", ""]),
        clap::error::ErrorKind::ValueValidation
    );
}

#[test]
fn publish_takes_properties_and_one_input() {
    let cli = parse(&[
        "publish",
        "--routing-key",
        "k",
        "--content-type",
        "application/json",
        "--type",
        "order",
        "--app-id",
        "shop",
        "--reply-to",
        "replies",
        "--correlation-id",
        "c-1",
        "--persistent",
        "--header",
        "n=1",
        "--mandatory",
        "hello",
    ]);
    let Some(Command::Publish(p)) = cli.command else {
        panic!("not publish")
    };
    assert!(p.mandatory && !p.confirm);
    assert_eq!(p.message.as_deref(), Some("hello"));
    let props = p.properties.properties();
    assert_eq!(props.content_type.as_deref(), Some("application/json"));
    assert_eq!(props.kind.as_deref(), Some("order"));
    assert_eq!(props.app_id.as_deref(), Some("shop"));
    assert_eq!(props.reply_to.as_deref(), Some("replies"));
    assert_eq!(props.correlation_id.as_deref(), Some("c-1"));
    assert_eq!(props.delivery_mode, Some(2));
    assert_eq!(props.headers.unwrap().get("n"), Some(&FieldValue::Int(1)));
    use clap::error::ErrorKind::ArgumentConflict;
    let both = ["publish", "--routing-key", "k", "--body-file", "f", "m"];
    assert_eq!(refused(&both), ArgumentConflict);
    let split = ["publish", "--routing-key", "k", "--split", "nul", "m"];
    assert_eq!(refused(&split), ArgumentConflict);
    let cli = parse(&["publish", "--routing-key", "k", "--split", "nul"]);
    assert!(matches!(cli.command, Some(Command::Publish(p)) if p.split == Some(Split::Nul)));
}

#[test]
fn bind_needs_exactly_one_destination() {
    use clap::error::ErrorKind::{ArgumentConflict, MissingRequiredArgument};
    let cli = parse(&["bind", "--exchange", "a", "--to-exchange", "b"]);
    assert!(matches!(cli.command, Some(Command::Bind(b)) if b.to_exchange.as_deref() == Some("b")));
    let cli = parse(&["unbind", "--exchange", "a", "--queue", "q"]);
    assert!(matches!(cli.command, Some(Command::Unbind(b)) if b.queue.as_deref() == Some("q")));
    assert_eq!(
        refused(&["bind", "--exchange", "a"]),
        MissingRequiredArgument
    );
    let both = [
        "bind",
        "--exchange",
        "a",
        "--queue",
        "q",
        "--to-exchange",
        "b",
    ];
    assert_eq!(refused(&both), ArgumentConflict);
}

#[test]
fn get_and_consume_take_a_format() {
    let cli = parse(&[
        "get",
        "--queue",
        "q",
        "--ack-mode",
        "requeue",
        "--format",
        "json",
    ]);
    assert!(matches!(
        cli.command,
        Some(Command::Get {
            ack_mode: AckMode::Requeue,
            format: Format::Json,
            ..
        })
    ));
    let cli = parse(&["get", "--queue", "q"]);
    assert!(matches!(
        cli.command,
        Some(Command::Get {
            ack_mode: AckMode::Ack,
            format: Format::Body,
            ..
        })
    ));
    let cli = parse(&[
        "consume",
        "--queue",
        "q",
        "--count",
        "3",
        "--timeout",
        "1.5",
    ]);
    let Some(Command::Consume {
        count,
        timeout,
        no_ack,
        prefetch,
        format,
        ..
    }) = cli.command
    else {
        panic!("not consume")
    };
    assert_eq!(
        (count, timeout, no_ack, prefetch, format),
        (Some(3), Some(1.5), false, None, Format::Body)
    );
}

#[test]
fn a_password_on_the_command_line_excludes_a_password_file() {
    let both = ["purge", "q", "--password", "p", "--password-file", "f"];
    assert_eq!(refused(&both), clap::error::ErrorKind::ArgumentConflict);
}

#[test]
fn declare_exchange_requires_a_type_and_publish_a_routing_key() {
    assert!(Cli::try_parse_from(["actormq", "declare-exchange", "x"]).is_err());
    assert!(Cli::try_parse_from(["actormq", "publish", "m"]).is_err());
    let bad_arg = Cli::try_parse_from(["actormq", "declare-queue", "q", "--arg", "oops"]);
    assert!(bad_arg.is_err());
}

#[test]
fn the_command_line_definition_is_consistent() {
    // clap checks every subcommand's arguments only when that subcommand is parsed:
    // check them all at once (a duplicate flag name fails here, not in a user's hands).
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

#[test]
fn operating_commands_take_leading_and_trailing_flags() {
    let cli = parse(&[
        "--user",
        "ops",
        "list",
        "queues",
        "--vhost",
        "prod",
        "--columns",
        "name,messages",
    ]);
    assert_eq!(cli.leading.user.as_deref(), Some("ops"));
    let Some(Command::Mgmt(super::super::mgmt::MgmtCommand::List { flags, columns, .. })) =
        cli.command
    else {
        panic!("not a list command");
    };
    assert_eq!(flags.vhost.as_deref(), Some("prod"));
    assert_eq!(columns, ["name", "messages"]);
    assert_eq!(
        refused(&["list", "nothing"]),
        clap::error::ErrorKind::InvalidValue
    );
}
