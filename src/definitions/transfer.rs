//! Definitions export and import, pure: what a vhost's definitions look like in
//! RabbitMQ's format ([`export_vhost`]), and the commands a definitions file amounts to
//! ([`plan`]), every one checked against a copy of the definitions with the pure
//! `check`s before any is applied. So an import with one bad item is refused naming
//! it and applies nothing; and since applying a command that is already satisfied is
//! no change, importing the same file twice is the same as once.

use super::format::{
    export_hash, import_hash, BindingItem, DefinitionsFile, ExchangeItem, PolicyItem, QueueItem,
};
use super::{
    predeclared, ApplyTo, BrokerCommand, BrokerDefinitions, Command, Permission, Policy,
    PolicyKind, TopicPermission, UserDefinition, VhostDefinitions,
};
use crate::broker::exchange::ExchangeSpec;
use crate::broker::messages::BindTarget;
use crate::broker::queue::QueueSpec;
use crate::broker::registry::BindingRecord;
use crate::error::BrokerError;
use std::collections::{BTreeMap, HashMap};

/// The RabbitMQ version whose definitions format is written.
pub const RABBIT_FORMAT_VERSION: &str = "3.13.0";

/// Adds the exchanges (but the predeclared ones), queues (but exclusive ones), bindings
/// and policies of `defs` to `file`; items name their vhost when `with_vhost`.
pub fn export_vhost(file: &mut DefinitionsFile, defs: &VhostDefinitions, with_vhost: bool) {
    let vhost = with_vhost.then(|| defs.vhost().to_string());
    for p in defs.policies() {
        let item = PolicyItem {
            vhost: vhost.clone(),
            name: p.name.clone(),
            pattern: p.pattern.clone(),
            apply_to: p.apply_to.as_str().to_string(),
            definition: p.definition.clone(),
            priority: p.priority,
        };
        match p.kind {
            PolicyKind::Policy => file.policies.push(item),
            PolicyKind::Operator => file.operator_policies.push(item),
        }
    }
    for x in defs.exchanges().filter(|x| !predeclared(&x.name)) {
        file.exchanges.push(ExchangeItem {
            name: x.name.clone(),
            vhost: vhost.clone(),
            kind: x.kind.clone(),
            durable: x.durable,
            auto_delete: x.auto_delete,
            internal: x.internal,
            arguments: x.arguments.clone(),
        });
    }
    for q in defs.queues().filter(|q| !q.exclusive) {
        file.queues.push(QueueItem {
            name: q.name.clone(),
            vhost: vhost.clone(),
            durable: q.durable,
            auto_delete: q.auto_delete,
            arguments: q.arguments.clone(),
        });
    }
    for b in defs.bindings() {
        let (destination, kind) = match &b.target {
            BindTarget::Queue(q) if defs.queue(q).is_some_and(|q| q.exclusive) => continue,
            BindTarget::Queue(q) => (q.clone(), "queue"),
            BindTarget::Exchange(x) => (x.clone(), "exchange"),
        };
        file.bindings.push(BindingItem {
            source: b.exchange.clone(),
            vhost: vhost.clone(),
            destination,
            destination_type: kind.to_string(),
            routing_key: b.routing_key.clone(),
            arguments: b.arguments.clone(),
        });
    }
}

/// The users, vhosts and permissions of `broker` in RabbitMQ's format.
pub fn export_broker(file: &mut DefinitionsFile, broker: &BrokerDefinitions) {
    let mut users = Vec::new();
    let mut permissions = Vec::new();
    let mut topic_permissions = Vec::new();
    for u in broker.users() {
        let (password_hash, algorithm) = export_hash(&u.password_hash);
        users.push(super::format::UserItem {
            name: u.name.clone(),
            password_hash,
            hashing_algorithm: Some(algorithm.to_string()),
            tags: super::format::Tags::List(u.tags.clone()),
            limits: serde_json::json!({}),
        });
        for v in &u.vhosts {
            let p = u.permission(v).expect("a vhost of the user");
            permissions.push(super::format::PermissionItem {
                user: u.name.clone(),
                vhost: v.clone(),
                configure: p.configure.as_str().to_string(),
                write: p.write.as_str().to_string(),
                read: p.read.as_str().to_string(),
            });
        }
        for ((vhost, exchange), t) in &u.topic_permissions {
            topic_permissions.push(super::format::TopicPermissionItem {
                user: u.name.clone(),
                vhost: vhost.clone(),
                exchange: exchange.clone(),
                write: t.write.clone(),
                read: t.read.clone(),
            });
        }
    }
    file.users = Some(users);
    file.permissions = Some(permissions);
    file.topic_permissions = Some(topic_permissions);
    file.vhosts = Some(
        broker
            .vhosts()
            .map(|v| super::format::VhostItem {
                name: v.clone(),
                description: String::new(),
                tags: Vec::new(),
            })
            .collect(),
    );
    file.global_parameters = Some(Vec::new());
    for (vhost, limits) in broker.all_vhost_limits() {
        file.parameters.push(serde_json::json!({
            "vhost": vhost,
            "component": super::limits::COMPONENT,
            "name": "limits",
            "value": limits.to_json(),
        }));
    }
}

/// The vhost limits of a file's `parameters` (RabbitMQ's component `vhost-limits`), as
/// commands; other parameters are not read.
fn limit_commands(parameters: &[serde_json::Value]) -> Result<Vec<BrokerCommand>, BrokerError> {
    let mut out = Vec::new();
    for p in parameters {
        if p["component"] != super::limits::COMPONENT {
            continue;
        }
        let vhost = p["vhost"].as_str().unwrap_or_default().to_string();
        let what = format!("vhost-limits of vhost '{}'", crate::error::clip(&vhost));
        let limits =
            super::VhostLimits::from_json(&p["value"]).map_err(|e| refused(what.clone(), e))?;
        out.push(BrokerCommand::SetVhostLimits { vhost, limits });
    }
    Ok(out)
}

/// What an import amounts to: broker-wide commands first, then each vhost's.
#[derive(Debug, Default)]
pub struct ImportPlan {
    /// Vhosts, users, permissions, topic permissions (in that order).
    pub broker: Vec<BrokerCommand>,
    /// Per vhost: policies, exchanges, queues, bindings (in that order).
    pub vhosts: BTreeMap<String, Vec<Command>>,
}

fn refused(item: String, why: impl std::fmt::Display) -> BrokerError {
    BrokerError::precondition(format!("{item}: {why}"))
}

/// The commands `file` amounts to, each checked against copies of the definitions
/// (`broker`, and `vhosts`: the current definitions of every existing vhost). With
/// `into`, the file is one vhost's: every item goes there and users, vhosts and
/// permissions are not read. `known_type` says whether an exchange type is registered.
/// The error names the first item that would fail, and why.
pub fn plan(
    file: DefinitionsFile,
    into: Option<&str>,
    broker: &BrokerDefinitions,
    vhosts: &HashMap<String, VhostDefinitions>,
    known_type: impl Fn(&str) -> bool,
) -> Result<ImportPlan, BrokerError> {
    let mut out = ImportPlan::default();
    let mut b = broker.clone();
    if into.is_none() {
        let mut cmds = Vec::new();
        for v in file.vhosts.iter().flatten() {
            cmds.push((
                format!("vhost '{}'", v.name),
                BrokerCommand::AddVhost(v.name.clone()),
            ));
        }
        for (what, cmd) in &cmds {
            b.check(cmd).map_err(|e| refused(what.clone(), e))?;
            b.apply(cmd.clone()).expect("checked");
        }
        out.broker.extend(cmds.into_iter().map(|(_, c)| c));
        for u in file.users.iter().flatten() {
            let what = format!("user '{}'", u.name);
            let hash = import_hash(&u.password_hash, u.hashing_algorithm.as_deref())
                .map_err(|e| refused(what.clone(), e))?;
            // An existing user keeps its grants (the file's permissions come next).
            let user = match b.user(&u.name) {
                Some(e) => UserDefinition {
                    password_hash: hash,
                    tags: u.tags.to_vec(),
                    ..e.clone()
                },
                None => UserDefinition::new(&u.name, &hash, [], false, u.tags.to_vec()),
            };
            let cmd = BrokerCommand::PutUser(user);
            b.check(&cmd).map_err(|e| refused(what, e))?;
            b.apply(cmd.clone()).expect("checked");
            out.broker.push(cmd);
        }
        for p in file.permissions.iter().flatten() {
            let what = format!("permission of user '{}' on vhost '{}'", p.user, p.vhost);
            let permission = Permission::new(&p.configure, &p.write, &p.read)
                .map_err(|e| refused(what.clone(), e.message()))?;
            let cmd = BrokerCommand::SetPermissions {
                user: p.user.clone(),
                vhost: p.vhost.clone(),
                permission,
            };
            b.check(&cmd).map_err(|e| refused(what, e))?;
            b.apply(cmd.clone()).expect("checked");
            out.broker.push(cmd);
        }
        for t in file.topic_permissions.iter().flatten() {
            let what = format!(
                "topic permission of user '{}' on exchange '{}' of vhost '{}'",
                t.user, t.exchange, t.vhost
            );
            let permission = TopicPermission::new(&t.write, &t.read)
                .map_err(|e| refused(what.clone(), e.message()))?;
            let cmd = BrokerCommand::SetTopicPermissions {
                user: t.user.clone(),
                vhost: t.vhost.clone(),
                exchange: t.exchange.clone(),
                permission,
            };
            b.check(&cmd).map_err(|e| refused(what, e))?;
            b.apply(cmd.clone()).expect("checked");
            out.broker.push(cmd);
        }
    }
    if into.is_none() {
        for cmd in limit_commands(&file.parameters)? {
            let BrokerCommand::SetVhostLimits { vhost, .. } = &cmd else {
                unreachable!("limit commands only");
            };
            let what = format!("vhost-limits of vhost '{}'", crate::error::clip(vhost));
            b.check(&cmd).map_err(|e| refused(what, e))?;
            b.apply(cmd.clone()).expect("checked");
            out.broker.push(cmd);
        }
    }
    let mut defs: HashMap<String, VhostDefinitions> = HashMap::new();
    let mut step = |vhost: Option<&String>, what: String, cmd: Command| {
        let vhost = match (into, vhost) {
            (Some(v), _) => v.to_string(),
            (None, Some(v)) => v.clone(),
            (None, None) => return Err(refused(what, "no \"vhost\"")),
        };
        let what = format!("{what} in vhost '{vhost}'");
        if !defs.contains_key(&vhost) {
            let d = match vhosts.get(&vhost) {
                Some(d) => d.clone(),
                None if b.has_vhost(&vhost) => VhostDefinitions::new(&vhost),
                None => return Err(refused(what, format!("no vhost '{vhost}'"))),
            };
            defs.insert(vhost.clone(), d);
        }
        let d = defs.get_mut(&vhost).expect("inserted");
        if let Command::DeclareQueue { spec, .. } = &cmd {
            // As a declare: a new queue must be of a type built here.
            if d.queue(&spec.name).is_none() {
                crate::broker::queue_args::check_queue_type(&vhost, spec)
                    .map_err(|e| refused(what.clone(), e.message()))?;
            }
        }
        d.check(&cmd).map_err(|e| refused(what, e))?;
        d.apply(cmd.clone()).expect("checked");
        out.vhosts.entry(vhost).or_default().push(cmd);
        Ok(())
    };
    let policies = file.policies.iter().map(|p| (PolicyKind::Policy, p)).chain(
        file.operator_policies
            .iter()
            .map(|p| (PolicyKind::Operator, p)),
    );
    for (kind, p) in policies {
        let what = format!("{} '{}'", kind.label(), p.name);
        let policy = ApplyTo::parse(&p.apply_to)
            .map_err(BrokerError::precondition)
            .and_then(|to| {
                Policy::new(
                    kind,
                    &p.name,
                    &p.pattern,
                    to,
                    p.priority,
                    p.definition.clone(),
                )
            })
            .map_err(|e| refused(what.clone(), e.message()))?;
        step(p.vhost.as_ref(), what, Command::SetPolicy(policy))?;
    }
    for x in &file.exchanges {
        let what = format!("exchange '{}'", x.name);
        if !known_type(&x.kind) {
            return Err(refused(what, format!("unknown exchange type '{}'", x.kind)));
        }
        let spec = ExchangeSpec {
            name: x.name.clone(),
            kind: x.kind.clone(),
            durable: x.durable,
            auto_delete: x.auto_delete,
            internal: x.internal,
            arguments: x.arguments.clone(),
        };
        step(x.vhost.as_ref(), what, Command::DeclareExchange(spec))?;
    }
    for q in &file.queues {
        let what = format!("queue '{}'", q.name);
        let spec = QueueSpec {
            name: q.name.clone(),
            durable: q.durable,
            exclusive: false,
            auto_delete: q.auto_delete,
            arguments: q.arguments.clone(),
        };
        crate::broker::queue_args::validate(&spec)
            .map_err(|e| refused(what.clone(), e.message()))?;
        let cmd = Command::DeclareQueue {
            spec,
            server_named: false,
        };
        step(q.vhost.as_ref(), what, cmd)?;
    }
    for bi in &file.bindings {
        let what = format!(
            "binding from '{}' to {} '{}'",
            bi.source, bi.destination_type, bi.destination
        );
        let target = match bi.destination_type.as_str() {
            "queue" => BindTarget::Queue(bi.destination.clone()),
            "exchange" => BindTarget::Exchange(bi.destination.clone()),
            other => {
                return Err(refused(
                    what,
                    format!("destination_type '{other}': expected queue or exchange"),
                ))
            }
        };
        let record = BindingRecord {
            exchange: bi.source.clone(),
            target,
            routing_key: bi.routing_key.clone(),
            arguments: bi.arguments.clone(),
        };
        step(bi.vhost.as_ref(), what, Command::Bind(record))?;
    }
    Ok(out)
}
