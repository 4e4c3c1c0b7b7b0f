//! Reading settings: the TOML text, then the `ACTORMQ__SECTION__KEY` environment
//! overrides merged into it, then deserialization into [`Settings`].
//!
//! Deserialization goes through `serde_path_to_error`, so every error names the
//! `section.key` it concerns, and serde's own messages name the bad value and what is
//! allowed: `storage.fsync: unknown variant `sometimes`, expected `always` or
//! `interval_ms``, `server.heartbeat: unknown field `heartbeat`, expected one of ...`,
//! `server.max_frame_size: invalid type: string "big", expected u32`. A key set from the
//! environment says so (`(set by ACTORMQ__SERVER__BIND)`), since the file is not at fault.

use super::{Settings, SettingsError, UserSettings};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Prefix (with its separator) of environment overrides.
const ENV_PREFIX: &str = "ACTORMQ__";
/// Separator of the key path in an override's name.
const ENV_SEPARATOR: &str = "__";
/// Keys whose override is a comma-separated list.
const LIST_KEYS: &[&str] = &[
    "broker.vhosts",
    "amqp.bind",
    "amqp.tls_bind",
    "http.bind",
    "http.tls_bind",
];

/// Parses `source` (`(origin, text)`, the origin, when not empty, naming the file in
/// errors; `None` = no file),
/// applies the `ACTORMQ__...` pairs of `env`, and deserializes the result. Does not run
/// [`Settings::check`].
pub(super) fn parse(
    source: Option<(&str, &str)>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, SettingsError> {
    let origin = match source {
        Some((origin, _)) if !origin.is_empty() => format!("{origin}: "),
        _ => String::new(),
    };
    let mut table = match source {
        Some((_, text)) => text
            .parse::<toml::Table>()
            .map_err(|e| SettingsError(format!("{origin}{}", e.to_string().trim_end())))?,
        None => toml::Table::new(),
    };
    // Key path ("server.bind") -> the variable that set it.
    let mut from_env = BTreeMap::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest
            .split(ENV_SEPARATOR)
            .map(|p| p.to_ascii_lowercase())
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(SettingsError(format!(
                "{name}: expected ACTORMQ__SECTION__KEY, e.g. ACTORMQ__SERVER__BIND"
            )));
        }
        let key = path.join(".");
        set_path(&mut table, &path, env_value(&key, &value))
            .map_err(|e| SettingsError(format!("{name}: {e}")))?;
        from_env.insert(key, name);
    }
    cluster_defaults(&mut table);
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        let blame = match from_env.get(&key) {
            Some(var) => format!(" (set by {var})"),
            None => String::new(),
        };
        // The message alone: the error's Display would add the key again.
        let inner = e.into_inner();
        SettingsError(format!(
            "{origin}{key}: {}{blame}",
            inner.message().trim_end()
        ))
    })
}

/// With `[cluster]`, `amqp.max_message_size` left unset is the largest message a
/// cluster replicates rather than the single node's 128 MiB (which such a node would
/// refuse to start with); set, it is checked against that cap (`Settings::check`).
fn cluster_defaults(table: &mut toml::Table) {
    if !table.contains_key("cluster") {
        return;
    }
    let path = ["amqp".to_string(), "max_message_size".to_string()];
    let set = matches!(table.get("amqp"), Some(toml::Value::Table(t)) if t.contains_key(&path[1]));
    if !set {
        let cap = crate::cluster::rpc::MAX_REPLICATED_MESSAGE as i64;
        // An `amqp` that is not a table is reported by the deserializer, naming it.
        let _ = set_path(table, &path, toml::Value::Integer(cap));
    }
}

/// An override's value, typed as TOML would type it: integers and booleans are
/// recognised, list keys split on commas, anything else is a string.
fn env_value(key: &str, value: &str) -> toml::Value {
    if LIST_KEYS.contains(&key) {
        return toml::Value::Array(
            value
                .split(',')
                .map(|v| toml::Value::String(v.trim().to_string()))
                .collect(),
        );
    }
    if let Ok(i) = value.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match value {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(value.to_string()),
    }
}

/// Sets `path` in `table`, creating the tables on the way.
fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().expect("a non-empty path");
    let mut here = table;
    for (i, part) in parents.iter().enumerate() {
        let next = here
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        here = match next {
            toml::Value::Table(t) => t,
            _ => return Err(format!("{} is not a section", path[..=i].join("."))),
        };
    }
    here.insert(last.clone(), value);
    Ok(())
}

/// Levels `log.level` may be when it is a single word.
const LOG_LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// A single word that is no level would be read by `tracing` as a target name, turning
/// every level on for that target and logging nothing else: refuse it. Directives
/// (`actormq=debug,info`) are left to `tracing`.
pub(super) fn check_log_level(level: &str) -> Result<(), SettingsError> {
    let word = !level.contains(['=', ',', ':', '[']);
    if word && !LOG_LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
        return Err(SettingsError(format!(
            "log.level: '{level}' is not a level, expected one of {} or a filter such as \"actormq=debug\"",
            LOG_LEVELS.join(", ")
        )));
    }
    if let Err(e) = crate::logging::parse_filter(level) {
        return Err(SettingsError(format!(
            "log.level: '{level}' is not a valid filter: {e}"
        )));
    }
    Ok(())
}

/// A users file: `[[users]]` entries only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    /// The entries.
    #[serde(default)]
    users: Vec<UserSettings>,
}

/// Reads the `[[users]]` entries of a users file (`users_file`), naming the file and
/// the entry's key in errors (`users[0].password_hash: missing field ...`).
pub fn load_users_file(path: &Path) -> Result<Vec<UserSettings>, SettingsError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| SettingsError(format!("users_file {shown}: {e}")))?;
    let table = text
        .parse::<toml::Table>()
        .map_err(|e| SettingsError(format!("users_file {shown}: {}", e.to_string().trim_end())))?;
    let file: UsersFile =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            SettingsError(format!(
                "users_file {shown}: {key}: {}",
                inner.message().trim_end()
            ))
        })?;
    Ok(file.users)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Settings::from_toml(text).unwrap_err().to_string()
    }

    fn env_err(text: &str, env: &[(&str, &str)]) -> String {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::from_toml_and_env(text, env)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn an_unknown_key_names_its_section_and_the_known_keys() {
        let e = err("[server]\nheartbeat = 5\n");
        assert!(
            e.contains("server.heartbeat: unknown field `heartbeat`"),
            "{e}"
        );
        assert!(e.contains("`heartbeat_secs`"), "{e}");
    }

    #[test]
    fn an_unknown_section_is_named() {
        let e = err("[serve]\nbind = \"x\"\n");
        assert!(e.contains("serve: unknown field `serve`"), "{e}");
        assert!(e.contains("`server`"), "{e}");
    }

    #[test]
    fn a_bad_enum_value_names_the_key_the_value_and_the_variants() {
        let e = err("[storage]\nfsync = \"sometimes\"\n");
        assert!(e.contains("storage.fsync"), "{e}");
        assert!(e.contains("sometimes"), "{e}");
        assert!(e.contains("`always`") && e.contains("`interval_ms`"), "{e}");
        let e = err("[log]\nformat = \"xml\"\n");
        assert!(e.contains("log.format") && e.contains("xml"), "{e}");
        assert!(e.contains("`text`") && e.contains("`json`"), "{e}");
    }

    #[test]
    fn a_value_of_the_wrong_type_names_the_key_the_value_and_the_type() {
        let e = err("[server]\nmax_frame_size = \"big\"\n");
        assert!(e.contains("server.max_frame_size"), "{e}");
        assert!(e.contains("\"big\"") && e.contains("u32"), "{e}");
        let e = err("[server]\nheartbeat_secs = 70000\n");
        assert!(
            e.contains("server.heartbeat_secs") && e.contains("70000"),
            "{e}"
        );
        let e = err("[[users]]\nname = \"a\"\n");
        assert!(e.contains("users[0]") && e.contains("password_hash"), "{e}");
    }

    #[test]
    fn the_key_is_named_once() {
        let e = err("[storage]\nfsync = \"sometimes\"\n");
        assert_eq!(
            e,
            "settings: storage.fsync: unknown variant `sometimes`, expected `always` or `interval_ms`"
        );
    }

    #[test]
    fn a_syntax_error_names_the_line() {
        let e = err("[server\n");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn overrides_from_the_environment_are_typed_and_blamed() {
        let env = [
            ("ACTORMQ__SERVER__BIND", "127.0.0.1:0"),
            ("ACTORMQ__BROKER__WORKERS", "3"),
            ("ACTORMQ__BROKER__VHOSTS", "/, /b"),
            ("ACTORMQ__LOG__FORMAT", "json"),
            ("ACTORMQ_PASSWORD", "not a setting"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let s = Settings::from_toml_and_env("[server]\nbind = \"0.0.0.0:1\"\n", env).unwrap();
        assert_eq!(s.server.bind, "127.0.0.1:0");
        assert_eq!(s.broker.workers, 3);
        assert_eq!(s.broker.vhosts, vec!["/", "/b"]);
        assert_eq!(s.log.format, super::super::LogFormat::Json);

        let e = env_err("", &[("ACTORMQ__SERVER__HEARTBEAT", "5")]);
        assert!(e.contains("server.heartbeat"), "{e}");
        assert!(e.contains("(set by ACTORMQ__SERVER__HEARTBEAT)"), "{e}");
        let e = env_err("", &[("ACTORMQ__STORAGE__FSYNC", "never")]);
        assert!(e.contains("storage.fsync") && e.contains("never"), "{e}");
        let e = env_err("", &[("ACTORMQ__SERVER____BIND", "x")]);
        assert!(e.contains("ACTORMQ__SERVER____BIND"), "{e}");
    }

    #[test]
    fn a_log_level_must_be_a_level_or_a_directive() {
        Settings::from_toml("[log]\nlevel = \"debug\"\n").unwrap();
        Settings::from_toml("[log]\nlevel = \"actormq=debug,warn\"\n").unwrap();
        let e = err("[log]\nlevel = \"loud\"\n");
        assert!(e.contains("log.level") && e.contains("loud"), "{e}");
        assert!(e.contains("error, warn, info"), "{e}");
    }

    #[test]
    fn a_users_file_names_the_entry_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(&path, "[[users]]\nname = \"a\"\nvhost = [\"/\"]\n").unwrap();
        let e = load_users_file(&path).unwrap_err().to_string();
        assert!(
            e.contains("users.toml") && e.contains("users[0].vhost"),
            "{e}"
        );
        let e = load_users_file(&dir.path().join("none.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.toml"), "{e}");
    }
}
