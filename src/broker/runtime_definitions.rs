//! The broker-wide definitions at run time: virtual hosts and users created, changed
//! and deleted through the [`BrokerHandle`] by [`BrokerCommand`]s, saved before they are
//! answered, with the registries of virtual hosts started and stopped to match.

use super::{registry, BrokerHandle, Registry};
use crate::definitions::{
    BrokerCommand, Permission, Policy, PolicyKind, SharedDefinitions, TopicPermission,
    UserDefinition, VhostDefinitions,
};
use crate::error::BrokerError;

impl BrokerHandle {
    /// The broker-wide definitions (virtual hosts, users), shared: logins read them.
    pub fn definitions(&self) -> SharedDefinitions {
        self.inner.definitions.clone()
    }

    /// The users this node seeded from its settings and nobody put or deleted since
    /// (a cluster node's own: see `BrokerDefinitions::seeded_users`).
    pub fn seeded_users(&self) -> std::collections::BTreeSet<String> {
        self.inner
            .definitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .seeded_users()
            .clone()
    }

    /// The users, by name.
    pub fn users(&self) -> Vec<UserDefinition> {
        self.inner
            .definitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .users()
            .cloned()
            .collect()
    }

    /// Creates a virtual host at run time (an existing one is no change); answered once
    /// it is saved.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), actormq::BrokerError> {
    /// let broker = actormq::Broker::builder().workers(1).start()?;
    /// broker.add_vhost("staging").await?;
    /// assert!(broker.vhosts().contains(&"staging".to_string()));
    /// let session = broker.session_in("staging")?;
    /// session.declare_queue("jobs", &actormq::QueueOptions::new()).await?;
    /// broker.delete_vhost("staging").await?;
    /// assert!(broker.session_in("staging").is_err());
    /// broker.shutdown();
    /// # Ok(()) }
    /// ```
    pub async fn add_vhost(&self, name: &str) -> Result<(), BrokerError> {
        self.broker_change(BrokerCommand::AddVhost(name.to_string()))
            .await
    }

    /// Deletes a virtual host at run time: every queue in it (with its messages, on
    /// disk too) and exchange, and every user's access to it. Sessions and connections
    /// still open on it get errors from then on.
    pub async fn delete_vhost(&self, name: &str) -> Result<(), BrokerError> {
        self.broker_change(BrokerCommand::DeleteVhost(name.to_string()))
            .await
    }

    /// A session on `vhost` acting as `user`: it may do what the user's permissions
    /// allow (ACCESS_REFUSED naming permission, resource, vhost and user otherwise),
    /// as the user's client connections. The management API acts through these.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), actormq::BrokerError> {
    /// use actormq::definitions::{Permission, UserDefinition};
    /// let broker = actormq::Broker::builder().workers(1).start()?;
    /// let hash = actormq::server::auth::hash_password("pw");
    /// broker.put_user(UserDefinition::new("ann", &hash, [], false, Vec::new())).await?;
    /// assert!(broker.session_as("/", "ann").is_err()); // no permission in "/"
    /// broker.set_user_permissions("ann", "/", Permission::new("^ann-", ".*", ".*")?).await?;
    /// let session = broker.session_as("/", "ann")?;
    /// session.declare_queue("ann-jobs", &actormq::QueueOptions::new()).await?;
    /// let e = session.declare_queue("jobs", &actormq::QueueOptions::new()).await.unwrap_err();
    /// assert_eq!(e.code(), actormq::ErrorCode::AccessRefused);
    /// broker.shutdown();
    /// # Ok(()) }
    /// ```
    pub fn session_as(&self, vhost: &str, user: &str) -> Result<crate::Session, BrokerError> {
        // An unknown vhost is NOT_FOUND, whoever asks.
        let session = self.session_in(vhost)?;
        let has = self
            .inner
            .definitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .user(user)
            .is_some_and(|u| u.vhosts.contains(vhost));
        if !has {
            tracing::warn!(%user, %vhost, "vhost access refused");
            return Err(BrokerError::access_refused(format!(
                "access to vhost '{}' refused for user '{}'",
                crate::error::clip(vhost),
                crate::error::clip(user)
            )));
        }
        let access = crate::channel::Access::new(self.definitions(), user, vhost);
        Ok(session.with_access(access))
    }

    /// Names the cluster (RabbitMQ's `PUT /api/cluster-name`): replicated in a
    /// cluster, saved on a single broker.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), actormq::BrokerError> {
    /// let broker = actormq::Broker::builder().workers(1).start()?;
    /// assert_eq!(broker.cluster_name(), None);
    /// broker.set_cluster_name("eu-prod").await?;
    /// assert_eq!(broker.cluster_name().as_deref(), Some("eu-prod"));
    /// broker.shutdown();
    /// # Ok(()) }
    /// ```
    pub async fn set_cluster_name(&self, name: &str) -> Result<(), BrokerError> {
        self.broker_change(BrokerCommand::SetClusterName(name.to_string()))
            .await
    }

    /// The cluster's name, once one was given.
    pub fn cluster_name(&self) -> Option<String> {
        self.inner
            .definitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .cluster_name()
            .map(str::to_string)
    }

    /// Creates or replaces a user (every virtual host it names must exist).
    pub async fn put_user(&self, user: UserDefinition) -> Result<(), BrokerError> {
        self.broker_change(BrokerCommand::PutUser(user)).await
    }

    /// Deletes a user. Connections already open as that user stay open (as in RabbitMQ
    /// until they are closed); new logins are refused.
    pub async fn delete_user(&self, name: &str) -> Result<(), BrokerError> {
        self.broker_change(BrokerCommand::DeleteUser(name.to_string()))
            .await
    }

    /// Lets `user` open `vhost` and do anything there (`.*` x3).
    pub async fn set_permissions(&self, user: &str, vhost: &str) -> Result<(), BrokerError> {
        self.set_user_permissions(user, vhost, Permission::all())
            .await
    }

    /// Sets what `user` may do in `vhost` (RabbitMQ's `set_permissions`): applies to
    /// the connections and sessions already open as that user at their next operation.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), actormq::BrokerError> {
    /// use actormq::definitions::{Permission, UserDefinition};
    /// let broker = actormq::Broker::builder().workers(1).start()?;
    /// let hash = actormq::server::auth::hash_password("pw");
    /// broker.put_user(UserDefinition::new("ann", &hash, [], false, Vec::new())).await?;
    /// let only_own = Permission::new("^ann\\.", "^ann\\.", "^ann\\.")?;
    /// broker.set_user_permissions("ann", "/", only_own.clone()).await?;
    /// let ann = broker.users().into_iter().find(|u| u.name == "ann").unwrap();
    /// assert_eq!(ann.permission("/"), Some(only_own));
    /// broker.shutdown();
    /// # Ok(()) }
    /// ```
    pub async fn set_user_permissions(
        &self,
        user: &str,
        vhost: &str,
        permission: Permission,
    ) -> Result<(), BrokerError> {
        let cmd = BrokerCommand::SetPermissions {
            user: user.to_string(),
            vhost: vhost.to_string(),
            permission,
        };
        self.change(cmd, |_| {}).await
    }

    /// Sets `user`'s topic permission on `exchange` of `vhost` (RabbitMQ's
    /// `set_topic_permissions`).
    pub async fn set_topic_permissions(
        &self,
        user: &str,
        vhost: &str,
        exchange: &str,
        permission: TopicPermission,
    ) -> Result<(), BrokerError> {
        let cmd = BrokerCommand::SetTopicPermissions {
            user: user.to_string(),
            vhost: vhost.to_string(),
            exchange: exchange.to_string(),
            permission,
        };
        self.change(cmd, |_| {}).await
    }

    /// Clears `user`'s topic permissions in `vhost`: on `exchange`, or every one.
    pub async fn clear_topic_permissions(
        &self,
        user: &str,
        vhost: &str,
        exchange: Option<&str>,
    ) -> Result<(), BrokerError> {
        let cmd = BrokerCommand::ClearTopicPermissions {
            user: user.to_string(),
            vhost: vhost.to_string(),
            exchange: exchange.map(str::to_string),
        };
        self.broker_change(cmd).await
    }

    /// Takes `vhost` away from `user`.
    pub async fn clear_permissions(&self, user: &str, vhost: &str) -> Result<(), BrokerError> {
        let cmd = BrokerCommand::ClearPermissions {
            user: user.to_string(),
            vhost: vhost.to_string(),
        };
        self.broker_change(cmd).await
    }

    /// A broker-wide change: in a cluster committed through its log (and answered once
    /// applied here), on a single node applied at once.
    async fn broker_change(&self, cmd: BrokerCommand) -> Result<(), BrokerError> {
        match &self.inner.ctx.cluster {
            Some(c) => c.propose(crate::cluster::Op::of_broker(cmd)).await?.done(),
            None => self.apply_broker_command(cmd).await,
        }
    }

    /// Applies a broker-wide command here, starting or stopping registries to match:
    /// on a single node at once, in a cluster once committed.
    pub(crate) async fn apply_broker_command(&self, cmd: BrokerCommand) -> Result<(), BrokerError> {
        match cmd {
            BrokerCommand::AddVhost(name) => {
                let ctx = self.inner.ctx.clone();
                self.change(BrokerCommand::AddVhost(name.clone()), move |me| {
                    let mut registries = me.inner.vhosts.write().unwrap_or_else(|p| p.into_inner());
                    registries
                        .entry(name.clone())
                        .or_insert_with(|| Registry::start(&name, ctx));
                })
                .await
            }
            BrokerCommand::DeleteVhost(name) => {
                let mut registry = None;
                let changed = self
                    .change(BrokerCommand::DeleteVhost(name.clone()), |me| {
                        registry = me
                            .inner
                            .vhosts
                            .write()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&name);
                    })
                    .await;
                // Even when the save failed the vhost is gone from the definitions: its
                // actors must go too, or they would run unreachable.
                if let Some(r) = registry {
                    // Answered once every queue has deleted itself (its log records
                    // included).
                    let _ = r.send(registry::DeleteAll).await;
                    tracing::info!(vhost = %name, "virtual host deleted");
                }
                changed
            }
            cmd => self.change(cmd, |_| {}).await,
        }
    }

    /// Sets a policy or operator policy in `vhost` (replacing the one of that kind and
    /// name); answered once the queues and exchanges it applies to have taken it and
    /// it is saved. Answers true when it is new.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), actormq::BrokerError> {
    /// use actormq::broker::queue::QueueSpec;
    /// use actormq::definitions::{ApplyTo, Policy, PolicyKind};
    /// let broker = actormq::Broker::builder().workers(1).start()?;
    /// let mut definition = actormq::FieldTable::new();
    /// definition.insert("max-length".into(), actormq::FieldValue::Int(2));
    /// let cap = Policy::new(PolicyKind::Policy, "cap", "^jobs", ApplyTo::Queues, 0, definition)?;
    /// assert!(broker.put_policy("/", cap).await?);
    /// let defs = broker.vhost_definitions("/").await?;
    /// assert_eq!(defs.queue_policy(&QueueSpec::new("jobs.eu")).policy.as_deref(), Some("cap"));
    /// broker.clear_policy("/", PolicyKind::Policy, "cap").await?;
    /// broker.shutdown();
    /// # Ok(()) }
    /// ```
    pub async fn put_policy(&self, vhost: &str, policy: Policy) -> Result<bool, BrokerError> {
        self.registry(vhost)?
            .send(registry::PutPolicy(policy))
            .await?
    }

    /// Clears a policy or operator policy of `vhost` (NOT_FOUND when there is none).
    pub async fn clear_policy(
        &self,
        vhost: &str,
        kind: PolicyKind,
        name: &str,
    ) -> Result<(), BrokerError> {
        let name = name.to_string();
        self.registry(vhost)?
            .send(registry::ClearPolicy { kind, name })
            .await?
    }

    /// The policies and operator policies of `vhost`.
    pub async fn policies(&self, vhost: &str) -> Result<Vec<Policy>, BrokerError> {
        Ok(self.registry(vhost)?.send(registry::ListPolicies).await?)
    }

    /// A copy of `vhost`'s definitions: exchanges, queues, bindings and policies.
    pub async fn vhost_definitions(&self, vhost: &str) -> Result<VhostDefinitions, BrokerError> {
        Ok(self
            .registry(vhost)?
            .send(registry::SnapshotDefinitions)
            .await?)
    }

    /// Seeds `users` when the broker has none (a new data directory, or no storage),
    /// and saves them. Not waited for: if the save is lost, the next start has no users
    /// and seeds them again.
    pub(crate) fn seed_users(&self, users: Vec<UserDefinition>) {
        let mut defs = self
            .inner
            .definitions
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if defs.seed_users(users) {
            drop(self.inner.ctx.durability.save_broker(&defs));
        }
    }

    /// Applies a broker-wide command under the definitions' lock, runs `then` (starting
    /// or removing actors) while still holding it, and answers once the change is saved.
    async fn change(
        &self,
        cmd: BrokerCommand,
        then: impl FnOnce(&Self),
    ) -> Result<(), BrokerError> {
        let saved = {
            let mut defs = self
                .inner
                .definitions
                .write()
                .unwrap_or_else(|p| p.into_inner());
            if !defs.apply(cmd)? {
                return Ok(());
            }
            // Saved (the snapshot gets the new vhost's part) before anyone can reach a
            // new registry: its first save must find its part there.
            let saved = self.inner.ctx.durability.save_broker(&defs);
            then(self);
            saved
        };
        Self::await_saved(saved).await
    }

    async fn await_saved(saved: Option<crate::storage::Completion>) -> Result<(), BrokerError> {
        match saved {
            Some(c) => c.await.map_err(|e| {
                BrokerError::new(
                    if e.is_disk_full() {
                        crate::error::ErrorCode::ResourceError
                    } else {
                        crate::error::ErrorCode::InternalError
                    },
                    format!("cannot save the broker's definitions: {e}"),
                )
            }),
            None => Ok(()),
        }
    }
}

/// Virtual host limits (RabbitMQ's `vhost-limits`: see [`crate::definitions::limits`]).
impl BrokerHandle {
    /// The limits of `vhost` (all `None` when it has none).
    pub fn vhost_limits(&self, vhost: &str) -> crate::definitions::VhostLimits {
        self.inner
            .definitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .vhost_limits(vhost)
    }

    /// Every virtual host that has limits, with them.
    pub fn all_vhost_limits(&self) -> Vec<(String, crate::definitions::VhostLimits)> {
        let defs = self
            .inner
            .definitions
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let all = defs.all_vhost_limits();
        all.iter().map(|(v, l)| (v.clone(), *l)).collect()
    }

    /// Replaces the limits of `vhost` (empty ones clear them); saved before it is
    /// answered. They apply to the next connection and the next queue declared:
    /// nothing open or declared already is closed or deleted, as in RabbitMQ. In a
    /// cluster they are the cluster's (RabbitMQ keeps them in its replicated
    /// metadata): proposed, and answered once applied on this node.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), actormq::BrokerError> {
    /// use actormq::definitions::VhostLimits;
    /// let broker = actormq::Broker::builder().workers(1).start()?;
    /// let one = VhostLimits { max_queues: Some(1), ..Default::default() };
    /// broker.set_vhost_limits("/", one).await?;
    /// let session = broker.session();
    /// session.declare_queue("a", &actormq::QueueOptions::new()).await?;
    /// let e = session.declare_queue("b", &actormq::QueueOptions::new()).await.unwrap_err();
    /// assert!(e.message().contains("queue limit in vhost '/' (1) is reached"));
    /// broker.shutdown();
    /// # Ok(()) }
    /// ```
    pub async fn set_vhost_limits(
        &self,
        vhost: &str,
        limits: crate::definitions::VhostLimits,
    ) -> Result<(), BrokerError> {
        let cmd = BrokerCommand::SetVhostLimits {
            vhost: vhost.to_string(),
            limits,
        };
        self.broker_change(cmd).await
    }
}
