//! The broker-wide definitions: virtual hosts and users (with the virtual hosts each
//! may open), changed only by [`BrokerCommand`]s, like a virtual host's entities. They
//! are runtime definitions: created and deleted without a restart, kept in the metadata
//! snapshot. `Settings.toml` only seeds a new data directory (or a broker without
//! storage), as RabbitMQ's default user and vhost are created on first boot only.

use crate::error::BrokerError;
use crate::storage::StoredUser;
use std::collections::{BTreeMap, BTreeSet};

/// One user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserDefinition {
    /// The user name.
    pub name: String,
    /// A PHC string (PBKDF2-SHA256, salted), never the password.
    pub password_hash: String,
    /// Virtual hosts the user may open.
    pub vhosts: BTreeSet<String>,
    /// Refused from anywhere but loopback (RabbitMQ's rule for `guest`).
    pub loopback_only: bool,
    /// RabbitMQ's user tags (`administrator`, `monitoring`, `management`, ...).
    pub tags: Vec<String>,
}

impl From<StoredUser> for UserDefinition {
    fn from(u: StoredUser) -> Self {
        UserDefinition {
            name: u.name,
            password_hash: u.password_hash,
            vhosts: u.vhosts.into_iter().collect(),
            loopback_only: u.loopback_only,
            tags: u.tags,
        }
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
    /// Lets `user` open `vhost`.
    SetPermissions {
        /// The user.
        user: String,
        /// The virtual host.
        vhost: String,
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
    /// Limits of the virtual hosts that have any.
    limits: BTreeMap<String, super::VhostLimits>,
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
            limits: BTreeMap::new(),
        }
    }

    /// Marks the users as seeded already (they came from a data directory that was).
    pub fn with_users_seeded(mut self, seeded: bool) -> Self {
        self.users_seeded = seeded;
        self
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
            self.users.entry(u.name.clone()).or_insert(u);
        }
        self.users_seeded = true;
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
            BrokerCommand::SetPermissions { user, vhost }
            | BrokerCommand::ClearPermissions { user, vhost } => {
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
        }
    }

    /// Validates `cmd` and applies it; answers whether anything changed. On an error
    /// nothing changed.
    pub fn apply(&mut self, cmd: BrokerCommand) -> Result<bool, BrokerError> {
        self.check(&cmd)?;
        Ok(match cmd {
            BrokerCommand::AddVhost(v) => self.vhosts.insert(v),
            BrokerCommand::DeleteVhost(v) => {
                for u in self.users.values_mut() {
                    u.vhosts.remove(&v);
                }
                self.limits.remove(&v);
                self.vhosts.remove(&v)
            }
            BrokerCommand::PutUser(u) => self.users.insert(u.name.clone(), u.clone()) != Some(u),
            BrokerCommand::DeleteUser(u) => self.users.remove(&u).is_some(),
            BrokerCommand::SetPermissions { user, vhost } => self
                .users
                .get_mut(&user)
                .is_some_and(|u| u.vhosts.insert(vhost)),
            BrokerCommand::ClearPermissions { user, vhost } => self
                .users
                .get_mut(&user)
                .is_some_and(|u| u.vhosts.remove(&vhost)),
            BrokerCommand::SetVhostLimits { vhost, limits } if limits.is_empty() => {
                self.limits.remove(&vhost).is_some()
            }
            BrokerCommand::SetVhostLimits { vhost, limits } => {
                self.limits.insert(vhost, limits) != Some(limits)
            }
        })
    }

    /// The users as the metadata store keeps them.
    pub fn stored_users(&self) -> Vec<StoredUser> {
        self.users.values().map(StoredUser::from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn user(name: &str, vhosts: &[&str]) -> UserDefinition {
        UserDefinition {
            name: name.into(),
            password_hash: "$pbkdf2-sha256$i=1,l=32$c2FsdA$aGFzaA".into(),
            vhosts: vhosts.iter().map(|v| v.to_string()).collect(),
            loopback_only: false,
            tags: Vec::new(),
        }
    }

    #[test]
    fn vhosts_and_users_change_only_through_checked_commands() {
        let mut d = BrokerDefinitions::new(["/".to_string()], []);
        assert!(d.apply(BrokerCommand::AddVhost("prod".into())).unwrap());
        assert!(!d.apply(BrokerCommand::AddVhost("prod".into())).unwrap());
        let err = d
            .apply(BrokerCommand::PutUser(user("ann", &["nope"])))
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound);
        assert!(d
            .apply(BrokerCommand::PutUser(user("ann", &["/"])))
            .unwrap());
        assert!(!d
            .apply(BrokerCommand::PutUser(user("ann", &["/"])))
            .unwrap());
        let grant = BrokerCommand::SetPermissions {
            user: "ann".into(),
            vhost: "prod".into(),
        };
        assert!(d.apply(grant).unwrap());
        assert!(d.user("ann").unwrap().vhosts.contains("prod"));
        // Deleting a vhost takes it from every user.
        assert!(d.apply(BrokerCommand::DeleteVhost("prod".into())).unwrap());
        assert!(!d.user("ann").unwrap().vhosts.contains("prod"));
        let before = d.clone();
        for bad in [
            BrokerCommand::DeleteVhost("prod".into()),
            BrokerCommand::DeleteUser("bob".into()),
            BrokerCommand::AddVhost(String::new()),
            BrokerCommand::ClearPermissions {
                user: "bob".into(),
                vhost: "/".into(),
            },
        ] {
            assert!(d.apply(bad).is_err());
            assert_eq!(d, before);
        }
    }

    #[test]
    fn stored_users_round_trip() {
        let mut d = BrokerDefinitions::new(["/".to_string()], []);
        let mut u = user("ann", &["/"]);
        u.tags = vec!["administrator".into()];
        d.apply(BrokerCommand::PutUser(u.clone())).unwrap();
        let stored = d.stored_users();
        assert_eq!(UserDefinition::from(stored[0].clone()), u);
    }
}
