//! Runs one operating command against the management API: resolves where the API is
//! and the credentials, then one or two requests.

use super::http::{enc, Api};
use super::{list, MgmtCommand, MgmtFlags};
use crate::cli::flags::ConnFlags;
use crate::cli::Error;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::Path;

/// The management API's URL when --http-url is not given: the first `[http] bind`
/// address of the settings (a wildcard address asked on loopback).
fn default_url(config: Option<&Path>) -> Result<String, Error> {
    let settings = match actormq::Settings::load(config) {
        Ok(s) => s,
        // A broken ./Settings.toml is the broker's business; one named with --config
        // must be read.
        Err(e) if config.is_some() => return Err(e.into()),
        Err(_) => return Ok("http://127.0.0.1:15672".to_string()),
    };
    let Some(bind) = settings.http.bind.first() else {
        return Ok("http://127.0.0.1:15672".to_string());
    };
    let bind = bind
        .replace("0.0.0.0:", "127.0.0.1:")
        .replace("[::]:", "[::1]:");
    Ok(format!("http://{bind}"))
}

fn connect(flags: MgmtFlags) -> Result<Api, Error> {
    let url = match &flags.http_url {
        Some(u) => u.clone(),
        None => default_url(flags.config.as_deref())?,
    };
    let user = flags.user.clone().unwrap_or_else(|| "guest".to_string());
    let conn = ConnFlags {
        user: Some(user.clone()),
        password: flags.password,
        password_file: flags.password_file,
        ..ConnFlags::default()
    };
    let password = crate::cli::password::password(&conn, &user)?;
    Api::new(&url, &user, &password)
}

/// Reads FILE, or standard input for `-`.
fn read_input(file: &Path) -> Result<Vec<u8>, Error> {
    if file == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        return Ok(buf);
    }
    std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()).into())
}

/// Writes FILE, or standard output for `-`.
fn write_output(file: &Path, data: &[u8]) -> Result<(), Error> {
    if file == Path::new("-") {
        let mut out = std::io::stdout().lock();
        out.write_all(data)?;
        out.write_all(b"\n")?;
        return Ok(());
    }
    std::fs::write(file, data).map_err(|e| format!("{}: {e}", file.display()).into())
}

/// Runs `command`.
pub async fn run(mut command: MgmtCommand) -> Result<(), Error> {
    let flags = std::mem::take(command.flags_mut());
    let vhost = flags.vhost.clone();
    let in_vhost = enc(vhost.as_deref().unwrap_or("/"));
    let api = connect(flags)?;
    match command {
        MgmtCommand::List {
            what,
            columns,
            format,
            ..
        } => list::list(&api, what, vhost.as_deref(), columns, format).await?,
        MgmtCommand::Status { format, .. } => list::status(&api, format).await?,
        MgmtCommand::CloseConnection { name, reason, .. } => {
            let path = format!("/api/connections/{}", enc(&name));
            let answer = api
                .send("DELETE", &path, &[("X-Reason", &reason)], None)
                .await?;
            super::http::check("DELETE", &path, &answer)?;
        }
        MgmtCommand::AddUser {
            name,
            new_password,
            tags,
            ..
        } => {
            let body = json!({"password": new_password, "tags": tags});
            api.call("PUT", &format!("/api/users/{}", enc(&name)), Some(&body))
                .await?;
        }
        MgmtCommand::DeleteUser { name, .. } => {
            api.call("DELETE", &format!("/api/users/{}", enc(&name)), None)
                .await?;
        }
        MgmtCommand::SetUserTags { name, tags, .. } => {
            // A PUT without a password keeps the user's hash (and vhosts).
            let path = format!("/api/users/{}", enc(&name));
            api.get(&path).await?;
            api.call("PUT", &path, Some(&json!({ "tags": tags })))
                .await?;
        }
        MgmtCommand::AddVhost { name, .. } => {
            api.call("PUT", &format!("/api/vhosts/{}", enc(&name)), None)
                .await?;
        }
        MgmtCommand::DeleteVhost { name, .. } => {
            api.call("DELETE", &format!("/api/vhosts/{}", enc(&name)), None)
                .await?;
        }
        MgmtCommand::SetPermissions {
            grantee,
            patterns,
            configure,
            write,
            read,
            ..
        } => {
            let flags = [configure, write, read];
            let p = |i: usize| {
                flags[i]
                    .clone()
                    .or_else(|| patterns.get(i).cloned())
                    .unwrap_or_else(|| ".*".into())
            };
            let body = json!({"configure": p(0), "write": p(1), "read": p(2)});
            let path = format!("/api/permissions/{in_vhost}/{}", enc(&grantee));
            api.call("PUT", &path, Some(&body)).await?;
        }
        MgmtCommand::ClearPermissions { grantee, .. } => {
            let path = format!("/api/permissions/{in_vhost}/{}", enc(&grantee));
            api.call("DELETE", &path, None).await?;
        }
        MgmtCommand::SetTopicPermissions {
            grantee,
            exchange,
            write,
            read,
            ..
        } => {
            let body = json!({"exchange": exchange, "write": write, "read": read});
            let path = format!("/api/topic-permissions/{in_vhost}/{}", enc(&grantee));
            api.call("PUT", &path, Some(&body)).await?;
        }
        MgmtCommand::ClearTopicPermissions {
            grantee, exchange, ..
        } => {
            let mut path = format!("/api/topic-permissions/{in_vhost}/{}", enc(&grantee));
            if let Some(x) = exchange {
                path.push_str(&format!("?exchange={}", enc(&x)));
            }
            api.call("DELETE", &path, None).await?;
        }
        MgmtCommand::ExportDefinitions { file, .. } => {
            let path = match &vhost {
                Some(v) => format!("/api/definitions/{}", enc(v)),
                None => "/api/definitions".to_string(),
            };
            let defs = api.get(&path).await?;
            write_output(&file, serde_json::to_string_pretty(&defs)?.as_bytes())?;
        }
        MgmtCommand::ImportDefinitions { file, .. } => {
            let data = read_input(&file)?;
            let defs: Value = serde_json::from_slice(&data)
                .map_err(|e| format!("{}: not JSON: {e}", file.display()))?;
            let path = match &vhost {
                Some(v) => format!("/api/definitions/{}", enc(v)),
                None => "/api/definitions".to_string(),
            };
            api.call("POST", &path, Some(&defs)).await?;
        }
        MgmtCommand::SetPolicy {
            name,
            pattern,
            definition,
            priority,
            apply_to,
            operator,
            ..
        } => {
            let definition: Value = serde_json::from_str(&definition)
                .map_err(|e| format!("the definition is not a JSON object: {e}"))?;
            let mut body =
                json!({"pattern": pattern, "definition": definition, "priority": priority});
            if let Some(a) = apply_to {
                body["apply-to"] = json!(a);
            }
            let kind = if operator {
                "operator-policies"
            } else {
                "policies"
            };
            let path = format!("/api/{kind}/{in_vhost}/{}", enc(&name));
            api.call("PUT", &path, Some(&body)).await?;
        }
        MgmtCommand::AddSuperStream {
            name,
            partitions,
            binding_keys,
            max_length_bytes,
            max_age,
            stream_max_segment_size_bytes,
            ..
        } => {
            let mut arguments = serde_json::Map::new();
            if let Some(n) = max_length_bytes {
                arguments.insert("x-max-length-bytes".into(), json!(n));
            }
            if let Some(a) = max_age {
                arguments.insert("x-max-age".into(), json!(a));
            }
            if let Some(n) = stream_max_segment_size_bytes {
                arguments.insert("x-stream-max-segment-size-bytes".into(), json!(n));
            }
            let mut body = json!({ "arguments": arguments });
            match partitions {
                Some(n) => body["partitions"] = json!(n),
                None => body["binding-keys"] = json!(binding_keys),
            }
            let path = format!("/api/stream/super-streams/{in_vhost}/{}", enc(&name));
            api.call("PUT", &path, Some(&body)).await?;
        }
        MgmtCommand::DeleteSuperStream { name, .. } => {
            let path = format!("/api/stream/super-streams/{in_vhost}/{}", enc(&name));
            api.call("DELETE", &path, None).await?;
        }
        MgmtCommand::ClearPolicy { name, operator, .. } => {
            let kind = if operator {
                "operator-policies"
            } else {
                "policies"
            };
            let path = format!("/api/{kind}/{in_vhost}/{}", enc(&name));
            api.call("DELETE", &path, None).await?;
        }
        MgmtCommand::SetVhostLimits { definition, .. } => {
            let limits: Value = serde_json::from_str(&definition)
                .map_err(|e| format!("the limits are not a JSON object: {e}"))?;
            // Checked whole before anything is sent: all or nothing.
            actormq::definitions::VhostLimits::from_json(&limits)?;
            let limits = limits.as_object().expect("checked: an object");
            // One PUT per limit named, a DELETE for the others: the set replaces them.
            for name in actormq::definitions::limits::NAMES {
                let path = format!("/api/vhost-limits/{in_vhost}/{name}");
                match limits.get(name) {
                    Some(v) => api.call("PUT", &path, Some(&json!({ "value": v }))).await?,
                    None => api.call("DELETE", &path, None).await?,
                };
            }
        }
        MgmtCommand::ClearVhostLimits { .. } => {
            for name in actormq::definitions::limits::NAMES {
                let path = format!("/api/vhost-limits/{in_vhost}/{name}");
                api.call("DELETE", &path, None).await?;
            }
        }
    }
    Ok(())
}
