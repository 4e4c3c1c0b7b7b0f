//! Users and their passwords: salted PBKDF2-SHA256 hashes in PHC strings (the `pbkdf2`
//! crate of RustCrypto, not hand-made crypto), virtual host permissions, and RabbitMQ's
//! rule that the default `guest` user may connect from loopback only.
//!
//! A failed login says ACCESS_REFUSED and nothing else: not whether the user exists,
//! nor which check failed (that goes to the broker's log). Failed logins slow the
//! next attempts from the same address (`throttle`).

mod external;
mod throttle;

pub(crate) use external::cert_user;
pub use external::EXTERNAL;

pub(crate) use throttle::login_slowed;
pub use throttle::LoginThrottle;

use crate::definitions::{BrokerDefinitions, SharedDefinitions, UserDefinition};
use crate::error::{clip, BrokerError};
use crate::settings::{Settings, SettingsError, UserSettings};
use pbkdf2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use pbkdf2::{Params, Pbkdf2};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

/// PBKDF2 rounds for new hashes: SCRAM-SHA-256's minimum (RFC 7677), about a
/// millisecond here, so hundreds of connections can log in at once.
const ROUNDS: u32 = 4096;

/// Hashes a password into a PHC string for `Settings.toml` (`actormq hash-password`).
///
/// ```
/// let h = actormq::server::auth::hash_password("s3cret");
/// assert!(h.starts_with("$pbkdf2-sha256$"));
/// assert!(actormq::server::auth::verify_password("s3cret", &h));
/// assert!(!actormq::server::auth::verify_password("guess", &h));
/// ```
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut rand_core::OsRng);
    let params = Params {
        rounds: ROUNDS,
        output_length: 32,
    };
    Pbkdf2
        .hash_password_customized(password.as_bytes(), None, None, params, &salt)
        .expect("PBKDF2 with valid parameters cannot fail")
        .to_string()
}

/// True when `password` matches the PHC string `hash` (ours, or a RabbitMQ SHA-256 hash
/// imported with the definitions: see `crate::definitions::format`).
pub fn verify_password(password: &str, hash: &str) -> bool {
    if crate::definitions::format::is_rabbit_hash(hash) {
        return crate::definitions::format::verify_rabbit_hash(password, hash);
    }
    match PasswordHash::new(hash) {
        Ok(parsed) => Pbkdf2.verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// The users a broker accepts: a view of the broker's live user definitions.
#[derive(Debug, Clone)]
pub struct Users {
    defs: SharedDefinitions,
}

impl Users {
    /// A standalone table of the users in `settings` (see [`Users::seeds`]), for code
    /// that has no broker (tests, tools).
    pub fn from_settings(settings: &Settings) -> Result<Users, SettingsError> {
        let mut defs = BrokerDefinitions::default();
        defs.seed_users(Self::seeds(settings)?);
        Ok(Users {
            defs: Arc::new(RwLock::new(defs)),
        })
    }

    /// A view of a running broker's users: read at every login, so users and
    /// permissions changed at run time apply to the next login at once.
    pub fn live(defs: SharedDefinitions) -> Users {
        Users { defs }
    }

    /// The users the settings (and the users file they name) declare; the default
    /// `guest` / `guest`, loopback only, when none are. They seed a broker that has no
    /// users yet (a new data directory); after that the users are runtime definitions.
    pub fn seeds(settings: &Settings) -> Result<Vec<UserDefinition>, SettingsError> {
        let mut list = settings.users.clone();
        if let Some(path) = &settings.users_file {
            let more = crate::settings::load_users_file(path)?;
            list.extend(more);
        }
        if list.is_empty() {
            list.push(UserSettings {
                name: "guest".into(),
                password_hash: hash_password("guest"),
                vhosts: vec!["/".into()],
                loopback_only: true,
                // RabbitMQ's guest is an administrator (of loopback only).
                tags: vec!["administrator".into()],
            });
        }
        let mut seeds = Vec::new();
        for u in list {
            if PasswordHash::new(&u.password_hash).is_err() {
                return Err(SettingsError(format!(
                    "users: password_hash of user '{}' is not a PHC string (make one with `actormq hash-password`)",
                    u.name
                )));
            }
            seeds.push(UserDefinition::new(
                &u.name,
                &u.password_hash,
                u.vhosts,
                u.loopback_only,
                u.tags,
            ));
        }
        Ok(seeds)
    }

    /// The user `name` as defined now.
    fn user(&self, name: &str) -> Option<UserDefinition> {
        self.defs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .user(name)
            .cloned()
    }

    /// Checks a login: the user exists, the password matches, loopback-only users come
    /// from loopback, and the vhost is allowed.
    pub fn authenticate(
        &self,
        user: &str,
        password: &str,
        vhost: &str,
        peer: IpAddr,
    ) -> Result<(), BrokerError> {
        self.login(user, password, peer)?;
        self.allowed(user, vhost)
    }

    /// Checks credentials and origin only (not the virtual host).
    pub fn login(&self, user: &str, password: &str, peer: IpAddr) -> Result<(), BrokerError> {
        // The client chose the name, and its length: clipped wherever it is shown.
        let shown = clip(user);
        let refused = || BrokerError::access_refused(format!("login refused for user '{shown}'"));
        let Some(u) = self.user(user) else {
            tracing::warn!(user = %shown, %peer, "login refused: no such user");
            return Err(refused());
        };
        if !verify_password(password, &u.password_hash) {
            tracing::warn!(user = %shown, %peer, "login refused: wrong password");
            return Err(refused());
        }
        if u.loopback_only && !is_loopback(peer) {
            tracing::warn!(user = %shown, %peer, "login refused: user may connect from loopback only");
            return Err(refused());
        }
        Ok(())
    }

    /// Checks that an authenticated `user` may open `vhost`.
    pub fn allowed(&self, user: &str, vhost: &str) -> Result<(), BrokerError> {
        let (user_shown, vhost_shown) = (clip(user), clip(vhost));
        let Some(u) = self.user(user) else {
            return Err(BrokerError::access_refused(format!(
                "login refused for user '{user_shown}'"
            )));
        };
        if !u.vhosts.contains(vhost) {
            tracing::warn!(user = %user_shown, vhost = %vhost_shown, "vhost access refused");
            return Err(BrokerError::access_refused(format!(
                "access to vhost '{vhost_shown}' refused for user '{user_shown}'"
            )));
        }
        Ok(())
    }
}

/// Whether `peer` is this host. An IPv4 client of a listener bound to `[::]` arrives
/// as an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`), which `IpAddr::is_loopback`
/// does not count: RabbitMQ lets `guest` in from it, and so must a broker that listens
/// on both families.
pub(crate) fn is_loopback(peer: IpAddr) -> bool {
    peer.to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const REMOTE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

    #[test]
    fn the_default_guest_logs_in_from_loopback_only() {
        let users = Users::from_settings(&Settings::default()).unwrap();
        users.authenticate("guest", "guest", "/", LOCAL).unwrap();
        let e = users
            .authenticate("guest", "guest", "/", REMOTE)
            .unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::AccessRefused);
    }

    #[test]
    fn an_ipv4_client_of_a_dual_stack_listener_is_loopback() {
        let users = Users::from_settings(&Settings::default()).unwrap();
        let mapped: IpAddr = Ipv4Addr::LOCALHOST.to_ipv6_mapped().into();
        users.authenticate("guest", "guest", "/", mapped).unwrap();
        users
            .authenticate("guest", "guest", "/", "::1".parse().unwrap())
            .unwrap();
        let remote: IpAddr = Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped().into();
        let e = users
            .authenticate("guest", "guest", "/", remote)
            .unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::AccessRefused);
    }

    #[test]
    fn wrong_password_and_unknown_user_look_the_same() {
        let users = Users::from_settings(&Settings::default()).unwrap();
        let a = users.authenticate("guest", "nope", "/", LOCAL).unwrap_err();
        let b = users.authenticate("ghost", "nope", "/", LOCAL).unwrap_err();
        assert_eq!(a.code(), b.code());
        assert!(!a.message().contains("password"));
    }

    #[test]
    fn vhosts_are_checked() {
        let mut s = Settings::default();
        s.users.push(UserSettings {
            name: "app".into(),
            password_hash: hash_password("pw"),
            vhosts: vec!["prod".into()],
            loopback_only: false,
            tags: Vec::new(),
        });
        let users = Users::from_settings(&s).unwrap();
        users.authenticate("app", "pw", "prod", REMOTE).unwrap();
        let e = users.authenticate("app", "pw", "/", REMOTE).unwrap_err();
        assert!(e.message().contains("vhost '/'"));
    }

    #[test]
    fn a_malformed_hash_is_a_settings_error_naming_the_user() {
        let mut s = Settings::default();
        s.users.push(UserSettings {
            name: "bob".into(),
            password_hash: "plaintext".into(),
            vhosts: vec!["/".into()],
            loopback_only: false,
            tags: Vec::new(),
        });
        let e = Users::from_settings(&s).unwrap_err();
        assert!(e.to_string().contains("'bob'"));
    }

    #[test]
    fn a_huge_user_name_is_clipped_in_the_refusal() {
        let users = Users::from_settings(&Settings::default()).unwrap();
        let name = "u".repeat(10 * 1024 * 1024);
        let e = users.login(&name, "pw", LOCAL).unwrap_err();
        assert!(e.message().len() < 1024, "{} bytes", e.message().len());
        assert!(e.message().contains("(10485760 bytes)"), "{}", e.message());
    }
}
