//! The broker-wide definitions: virtual hosts and users (with the virtual hosts each
//! may open), changed only by [`BrokerCommand`]s, like a virtual host's entities. They
//! are runtime definitions: created and deleted without a restart, kept in the metadata
//! snapshot. `Settings.toml` only seeds a new data directory (or a broker without
//! storage), as RabbitMQ's default user and vhost are created on first boot only.
//!
//! Every change that does something bumps the [`Generation`]: open channels compare it
//! (one atomic load) before using the permission decisions they cached, so a change
//! applies to connections already open without a lock or a regex per publish.

use super::permissions::{Permission, TopicPermission};
use crate::error::BrokerError;
use crate::storage::{StoredPermission, StoredTopicPermission, StoredUser};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A counter of changes to the broker-wide definitions, shared by every clone of the
/// definitions and read without their lock.
#[derive(Debug, Clone, Default)]
pub struct Generation(Arc<AtomicU64>);

impl Generation {
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

impl PartialEq for Generation {
    /// Not part of what the definitions *are*: two equal definitions may have seen
    /// different numbers of changes.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// One user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserDefinition {
    /// The user name.
    pub name: String,
    /// A PHC string (PBKDF2-SHA256, salted), never the password.
    pub password_hash: String,
    /// Virtual hosts the user has permissions in (may open).
    pub vhosts: BTreeSet<String>,
    /// The patterns of the virtual hosts of `vhosts` where they are not `.*` three
    /// times (a vhost of `vhosts` missing here is `.*` x3: grants made before
    /// patterns existed read back so).
    pub permissions: BTreeMap<String, Permission>,
    /// Topic permissions by (virtual host, exchange).
    pub topic_permissions: BTreeMap<(String, String), TopicPermission>,
    /// Refused from anywhere but loopback (RabbitMQ's rule for `guest`).
    pub loopback_only: bool,
    /// RabbitMQ's user tags (`administrator`, `monitoring`, `management`, ...).
    pub tags: Vec<String>,
}

impl UserDefinition {
    /// A user with a full grant (`.*` x3) on each of `vhosts`, no topic permissions.
    pub fn new(
        name: &str,
        password_hash: &str,
        vhosts: impl IntoIterator<Item = String>,
        loopback_only: bool,
        tags: Vec<String>,
    ) -> Self {
        UserDefinition {
            name: name.to_string(),
            password_hash: password_hash.to_string(),
            vhosts: vhosts.into_iter().collect(),
            permissions: BTreeMap::new(),
            topic_permissions: BTreeMap::new(),
            loopback_only,
            tags,
        }
    }

    /// The user's permission in `vhost`, if it has one.
    pub fn permission(&self, vhost: &str) -> Option<Permission> {
        if !self.vhosts.contains(vhost) {
            return None;
        }
        Some(
            self.permissions
                .get(vhost)
                .cloned()
                .unwrap_or_else(Permission::all),
        )
    }

    /// Sets the user's permission in `vhost`; answers whether it changed.
    fn grant(&mut self, vhost: String, permission: Permission) -> bool {
        let before = self.permission(&vhost);
        if permission.is_all() {
            self.permissions.remove(&vhost);
        } else {
            self.permissions.insert(vhost.clone(), permission.clone());
        }
        self.vhosts.insert(vhost);
        before.as_ref() != Some(&permission)
    }

    /// Takes the user's permission in `vhost` away; answers whether it had one.
    fn revoke(&mut self, vhost: &str) -> bool {
        self.permissions.remove(vhost);
        self.vhosts.remove(vhost)
    }

    /// The topic permissions of the user in `vhost`, by exchange.
    pub fn topic_permissions_in<'a>(
        &'a self,
        vhost: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a TopicPermission)> + 'a {
        self.topic_permissions
            .iter()
            .filter(move |((v, _), _)| v == vhost)
            .map(|((_, x), t)| (x.as_str(), t))
    }
}

impl From<StoredUser> for UserDefinition {
    /// A stored pattern that no longer compiles is logged and read as `^$` (nothing):
    /// a grant is never widened by a damaged record.
    fn from(u: StoredUser) -> Self {
        let mut user =
            UserDefinition::new(&u.name, &u.password_hash, u.vhosts, u.loopback_only, u.tags);
        for p in u.permissions {
            let permission = Permission::new(&p.configure, &p.write, &p.read).unwrap_or_else(|e| {
                tracing::error!(user = %u.name, vhost = %p.vhost, error = %e, "a stored permission does not compile: read as no access");
                Permission::new("", "", "").expect("empty patterns compile")
            });
            user.grant(p.vhost, permission);
        }
        for t in u.topic_permissions {
            let topic = TopicPermission::new(&t.write, &t.read).unwrap_or_else(|e| {
                tracing::error!(user = %u.name, vhost = %t.vhost, exchange = %t.exchange, error = %e, "a stored topic permission does not compile: read as no access");
                TopicPermission { write: String::new(), read: String::new() }
            });
            user.topic_permissions.insert((t.vhost, t.exchange), topic);
        }
        user
    }
}

impl From<&UserDefinition> for StoredUser {
    fn from(u: &UserDefinition) -> Self {
        StoredUser {
            name: u.name.clone(),
            password_hash: u.password_hash.clone(),
            vhosts: u.vhosts.iter().cloned().collect(),
            loopback_only: u.loopback_only,
            tags: u.tags.clone(),
            permissions: u
                .permissions
                .iter()
                .map(|(vhost, p)| StoredPermission {
                    vhost: vhost.clone(),
                    configure: p.configure.as_str().to_string(),
                    write: p.write.as_str().to_string(),
                    read: p.read.as_str().to_string(),
                })
                .collect(),
            topic_permissions: u
                .topic_permissions
                .iter()
                .map(|((vhost, exchange), t)| StoredTopicPermission {
                    vhost: vhost.clone(),
                    exchange: exchange.clone(),
                    write: t.write.clone(),
                    read: t.read.clone(),
                })
                .collect(),
        }
    }
}

/// One change to the broker-wide definitions.
#[derive(Debug, Clone, PartialEq)]
pub enum BrokerCommand {
    /// Creates a virtual host (an existing one is no change).
    AddVhost(String),
    /// Deletes a virtual host (with everything in it) and every user's access to it.
    DeleteVhost(String),
    /// Creates a user, or replaces the one of that name.
    PutUser(UserDefinition),
    /// Deletes a user (a missing one is NOT_FOUND, as `rabbitmqctl delete_user` says).
    DeleteUser(String),
    /// Sets what `user` may do in `vhost` (and so lets it open `vhost`).
    SetPermissions {
        /// The user.
        user: String,
        /// The virtual host.
        vhost: String,
        /// The three patterns.
        permission: Permission,
    },
    /// Takes `vhost` away from `user`.
    ClearPermissions {
        /// The user.
        user: String,
        /// The virtual host.
        vhost: String,
    },
    /// Replaces a virtual host's limits (empty ones clear them all).
    SetVhostLimits {
        /// The virtual host.
        vhost: String,
        /// Its limits from now on.
        limits: super::VhostLimits,
    },
    /// Sets `user`'s topic permission on `exchange` of `vhost`.
    SetTopicPermissions {
        /// The user.
        user: String,
        /// The virtual host.
        vhost: String,
        /// The (topic) exchange.
        exchange: String,
        /// The two patterns.
        permission: TopicPermission,
    },
    /// Clears `user`'s topic permissions in `vhost`: on `exchange`, or on all of them.
    ClearTopicPermissions {
        /// The user.
        user: String,
        /// The virtual host.
        vhost: String,
        /// One exchange; None = every one.
        exchange: Option<String>,
    },
    /// Names the cluster (RabbitMQ's `PUT /api/cluster-name`; a single broker is a
    /// cluster of one).
    SetClusterName(String),
}

/// The broker-wide definitions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BrokerDefinitions {
    /// Virtual hosts by name.
    vhosts: BTreeSet<String>,
    /// Users by name.
    users: BTreeMap<String, UserDefinition>,
    /// The settings' users were seeded once: never again, even when every user has
    /// been deleted since (as RabbitMQ creates its default user on first boot only).
    users_seeded: bool,
    /// The users the settings seeded that no `PutUser`, `DeleteUser` or permission
    /// change has touched since: in a cluster they are this node's own, never replicated (each node seeds
    /// its own, with its own salt), so a definitions snapshot neither carries nor
    /// deletes them (`cluster::snapshot`).
    seeded: BTreeSet<String>,
    /// Limits of the virtual hosts that have any.
    limits: BTreeMap<String, super::VhostLimits>,
    /// The name given by [`BrokerCommand::SetClusterName`], if any (until then the
    /// management API names the cluster after the node).
    cluster_name: Option<String>,
    /// Bumped by every change (see the module documentation).
    generation: Generation,
}

fn valid_vhost(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && !name.chars().any(char::is_control)
}

impl BrokerDefinitions {
    /// Definitions with these virtual hosts and users.
    pub fn new(
        vhosts: impl IntoIterator<Item = String>,
        users: impl IntoIterator<Item = UserDefinition>,
    ) -> Self {
        BrokerDefinitions {
            vhosts: vhosts.into_iter().collect(),
            users: users.into_iter().map(|u| (u.name.clone(), u)).collect(),
            users_seeded: false,
            seeded: BTreeSet::new(),
            limits: BTreeMap::new(),
            cluster_name: None,
            generation: Generation::default(),
        }
    }

    /// The change counter, shared: read it without the definitions' lock.
    pub fn generation(&self) -> &Generation {
        &self.generation
    }

    /// Marks the users as seeded already (they came from a data directory that was).
    pub fn with_users_seeded(mut self, seeded: bool) -> Self {
        self.users_seeded = seeded;
        self
    }

    /// With these users marked as seeded by this node's settings and unchanged since
    /// (restored from the metadata snapshot).
    pub fn with_seeded_users(mut self, seeded: BTreeSet<String>) -> Self {
        self.seeded = seeded;
        self
    }

    /// The users seeded from this node's settings and not put or deleted since.
    pub fn seeded_users(&self) -> &BTreeSet<String> {
        &self.seeded
    }

    /// With this cluster name (restored from the metadata snapshot).
    pub fn with_cluster_name(mut self, name: Option<String>) -> Self {
        self.cluster_name = name;
        self
    }

    /// The cluster's name, once one was given.
    pub fn cluster_name(&self) -> Option<&str> {
        self.cluster_name.as_deref()
    }

    /// With these vhost limits (restored from the metadata snapshot).
    pub fn with_limits(mut self, limits: BTreeMap<String, super::VhostLimits>) -> Self {
        self.limits = limits;
        self
    }

    /// The limits of `vhost` (none set: all `None`).
    pub fn vhost_limits(&self, vhost: &str) -> super::VhostLimits {
        self.limits.get(vhost).copied().unwrap_or_default()
    }

    /// Every virtual host that has limits, with them.
    pub fn all_vhost_limits(&self) -> &BTreeMap<String, super::VhostLimits> {
        &self.limits
    }

    /// True once the settings' users have been seeded.
    pub fn users_seeded(&self) -> bool {
        self.users_seeded
    }

    /// The virtual hosts, sorted.
    pub fn vhosts(&self) -> impl Iterator<Item = &String> {
        self.vhosts.iter()
    }

    /// True when `vhost` is defined.
    pub fn has_vhost(&self, vhost: &str) -> bool {
        self.vhosts.contains(vhost)
    }

    /// The users, by name.
    pub fn users(&self) -> impl Iterator<Item = &UserDefinition> {
        self.users.values()
    }

    /// The user `name`.
    pub fn user(&self, name: &str) -> Option<&UserDefinition> {
        self.users.get(name)
    }

    /// Adds `users`, as they are (their permissions may name virtual hosts not created
    /// yet), the first time only: how the settings seed a new broker. A user of the
    /// same name already defined is kept. False when they were seeded before.
    pub fn seed_users(&mut self, users: Vec<UserDefinition>) -> bool {
        if self.users_seeded {
            return false;
        }
        for u in users {
            if let std::collections::btree_map::Entry::Vacant(e) = self.users.entry(u.name.clone())
            {
                self.seeded.insert(u.name.clone());
                e.insert(u);
            }
        }
        self.users_seeded = true;
        self.generation.bump();
        true
    }

    /// The error `cmd` would fail with, if any.
    pub fn check(&self, cmd: &BrokerCommand) -> Result<(), BrokerError> {
        let no_vhost = |v: &str| BrokerError::not_found("vhost", v, v);
        let no_user =
            |u: &str| BrokerError::new(crate::error::ErrorCode::NotFound, format!("no user '{u}'"));
        match cmd {
            BrokerCommand::AddVhost(v) if !valid_vhost(v) => Err(BrokerError::precondition(
                format!("invalid vhost name '{v}': 1-255 characters, no control characters"),
            )),
            BrokerCommand::AddVhost(_) => Ok(()),
            BrokerCommand::DeleteVhost(v) if !self.vhosts.contains(v) => Err(no_vhost(v)),
            BrokerCommand::DeleteVhost(_) => Ok(()),
            BrokerCommand::PutUser(u) => {
                if u.name.is_empty() || u.name.len() > 255 {
                    return Err(BrokerError::precondition(
                        "invalid user name: 1-255 bytes".to_string(),
                    ));
                }
                if let Some(v) = u.vhosts.iter().find(|v| !self.vhosts.contains(*v)) {
                    return Err(no_vhost(v));
                }
                Ok(())
            }
            BrokerCommand::DeleteUser(u) if !self.users.contains_key(u) => Err(no_user(u)),
            BrokerCommand::DeleteUser(_) => Ok(()),
            BrokerCommand::SetPermissions { user, vhost, .. }
            | BrokerCommand::ClearPermissions { user, vhost }
            | BrokerCommand::SetTopicPermissions { user, vhost, .. }
            | BrokerCommand::ClearTopicPermissions { user, vhost, .. } => {
                if !self.users.contains_key(user) {
                    return Err(no_user(user));
                }
                if !self.vhosts.contains(vhost) {
                    return Err(no_vhost(vhost));
                }
                Ok(())
            }
            BrokerCommand::SetVhostLimits { vhost, .. } if !self.vhosts.contains(vhost) => {
                Err(no_vhost(vhost))
            }
            BrokerCommand::SetVhostLimits { .. } => Ok(()),
            BrokerCommand::SetClusterName(name)
                if name.is_empty()
                    || name.chars().count() > 255
                    || name.chars().any(char::is_control) =>
            {
                Err(BrokerError::precondition(
                    "a cluster name is 1-255 characters, no control characters".to_string(),
                ))
            }
            BrokerCommand::SetClusterName(_) => Ok(()),
        }
    }

    /// Validates `cmd` and applies it; answers whether anything changed. On an error
    /// nothing changed.
    pub fn apply(&mut self, cmd: BrokerCommand) -> Result<bool, BrokerError> {
        self.check(&cmd)?;
        // Any change of a seeded user's name (its record or its permissions) is the
        // cluster's: the user is no longer this node's own, and a definitions
        // snapshot carries it whole (else a node joining through one would lack
        // what the entries gave it).
        let took_over = match &cmd {
            BrokerCommand::PutUser(UserDefinition { name: user, .. })
            | BrokerCommand::DeleteUser(user)
            | BrokerCommand::SetPermissions { user, .. }
            | BrokerCommand::ClearPermissions { user, .. }
            | BrokerCommand::SetTopicPermissions { user, .. }
            | BrokerCommand::ClearTopicPermissions { user, .. } => self.seeded.remove(user),
            _ => false,
        };
        let changed = match cmd {
            BrokerCommand::AddVhost(v) => self.vhosts.insert(v),
            BrokerCommand::DeleteVhost(v) => {
                for u in self.users.values_mut() {
                    u.revoke(&v);
                    u.topic_permissions.retain(|(tv, _), _| *tv != v);
                }
                self.limits.remove(&v);
                self.vhosts.remove(&v)
            }
            BrokerCommand::PutUser(u) => self.users.insert(u.name.clone(), u.clone()) != Some(u),
            BrokerCommand::DeleteUser(u) => self.users.remove(&u).is_some(),
            BrokerCommand::SetPermissions {
                user,
                vhost,
                permission,
            } => self
                .users
                .get_mut(&user)
                .is_some_and(|u| u.grant(vhost, permission)),
            BrokerCommand::ClearPermissions { user, vhost } => {
                self.users.get_mut(&user).is_some_and(|u| u.revoke(&vhost))
            }
            BrokerCommand::SetTopicPermissions {
                user,
                vhost,
                exchange,
                permission,
            } => self.users.get_mut(&user).is_some_and(|u| {
                u.topic_permissions
                    .insert((vhost, exchange), permission.clone())
                    != Some(permission)
            }),
            BrokerCommand::ClearTopicPermissions {
                user,
                vhost,
                exchange,
            } => self.users.get_mut(&user).is_some_and(|u| {
                let before = u.topic_permissions.len();
                u.topic_permissions
                    .retain(|(v, x), _| *v != vhost || exchange.as_ref().is_some_and(|e| e != x));
                u.topic_permissions.len() != before
            }),
            BrokerCommand::SetVhostLimits { vhost, limits } if limits.is_empty() => {
                self.limits.remove(&vhost).is_some()
            }
            BrokerCommand::SetVhostLimits { vhost, limits } => {
                self.limits.insert(vhost, limits) != Some(limits)
            }
            BrokerCommand::SetClusterName(name) => {
                self.cluster_name.replace(name.clone()).as_ref() != Some(&name)
            }
        };
        // A seeded user taken over changes what is saved (the seeded set) even when
        // its record does not change.
        if changed || took_over {
            self.generation.bump();
        }
        Ok(changed)
    }

    /// The users as the metadata store keeps them.
    pub fn stored_users(&self) -> Vec<StoredUser> {
        self.users.values().map(StoredUser::from).collect()
    }
}

#[cfg(test)]
#[path = "broker_tests.rs"]
mod tests;
