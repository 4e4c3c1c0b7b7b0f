//! Who is asking, and what they may do: HTTP basic auth against the broker's users,
//! then RabbitMQ's user tags. `administrator` may do everything; `monitoring` may read
//! everything (every vhost, every connection); `management` (and `policymaker`) may see
//! and change the objects of the virtual hosts it may open; a user with none of these
//! tags may not use the API at all (403), as RabbitMQ's "Not management user".
//! Operations on resources are then checked against the caller's permissions
//! ([`Caller::session`]).

use super::error::ApiError;
use super::Api;
use crate::definitions::UserDefinition;
use crate::server::auth::login_slowed;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use base64ct::{Base64, Encoding};
use futures_util::future::LocalBoxFuture;

/// An authenticated user with a management tag.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The user's definition as it was when the request came in.
    pub user: UserDefinition,
}

impl Caller {
    fn has(&self, tag: &str) -> bool {
        self.user.tags.iter().any(|t| t == tag)
    }

    /// `administrator`: everything.
    pub fn is_admin(&self) -> bool {
        self.has("administrator")
    }

    /// `administrator` or `monitoring`: may read every vhost and connection.
    pub fn sees_all(&self) -> bool {
        self.is_admin() || self.has("monitoring")
    }

    /// May read the objects of `vhost`.
    pub fn may_see(&self, vhost: &str) -> bool {
        self.sees_all() || self.user.vhosts.contains(vhost)
    }

    /// May change the objects (queues, exchanges, bindings) of `vhost`.
    pub fn may_change(&self, vhost: &str) -> bool {
        self.is_admin() || self.user.vhosts.contains(vhost)
    }

    /// Refuses unless [`may_see`](Self::may_see).
    pub fn check_see(&self, vhost: &str) -> Result<(), ApiError> {
        if self.may_see(vhost) {
            Ok(())
        } else {
            Err(self.refused(&format!("access to vhost '{vhost}'")))
        }
    }

    /// Refuses unless [`may_change`](Self::may_change).
    pub fn check_change(&self, vhost: &str) -> Result<(), ApiError> {
        if self.may_change(vhost) {
            Ok(())
        } else {
            Err(self.refused(&format!("changes in vhost '{vhost}'")))
        }
    }

    /// A session acting as the caller, for the operations on resources (declare,
    /// delete, bind, publish, get, purge): the caller's permissions apply to them as
    /// to its client connections, as RabbitMQ's management plugin acts through a
    /// channel of the user. `administrator` is no exception.
    pub fn session(&self, api: &Api, vhost: &str) -> Result<crate::Session, ApiError> {
        Ok(api.shared.broker.session_as(vhost, &self.user.name)?)
    }

    /// Refuses unless `administrator` (users, vhosts, permissions).
    pub fn check_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(self.refused("this operation (administrator only)"))
        }
    }

    fn refused(&self, what: &str) -> ApiError {
        tracing::warn!(user = %self.user.name, what, "management API: refused");
        ApiError::forbidden(format!("{what} refused for user '{}'", self.user.name))
    }
}

/// The tags that open the management API.
const MANAGEMENT_TAGS: [&str; 4] = ["administrator", "monitoring", "policymaker", "management"];

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticate(&req).await })
    }
}

async fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    // The web UI says it is a script: its 401s must not open the browser's own
    // credentials dialog (the page has a login form).
    let script = req.headers().contains_key("x-requested-with");
    check_credentials(req).await.map_err(|mut e| {
        e.challenge = !script;
        e
    })
}

/// Checks the request's basic-auth credentials through the same per-address throttle
/// as the native and AMQP logins (`server::auth::login_slowed`): a password guesser
/// is slowed whichever port it uses, and the hashing runs off the HTTP workers.
async fn check_credentials(req: &HttpRequest) -> Result<Caller, ApiError> {
    let api = req
        .app_data::<web::Data<Api>>()
        .ok_or_else(|| ApiError::bad_request("no management state"))?;
    let (name, password) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_basic)
        .ok_or_else(|| ApiError::unauthorized("HTTP basic authentication required"))?;
    let peer = req
        .peer_addr()
        .map(|a| a.ip().to_canonical())
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    login_slowed(api.shared.clone(), name.clone(), password, peer)
        .await
        .map_err(|e| ApiError::unauthorized(e.message().to_string()))?;
    let user = api
        .shared
        .broker
        .definitions()
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .user(&name)
        .cloned()
        .ok_or_else(|| ApiError::unauthorized(format!("login refused for user '{name}'")))?;
    let caller = Caller { user };
    if !MANAGEMENT_TAGS.iter().any(|t| caller.has(t)) {
        tracing::warn!(user = %name, "management API: user has no management tag");
        return Err(ApiError::forbidden(format!(
            "user '{name}' is not a management user (it needs one of the tags {})",
            MANAGEMENT_TAGS.join(", ")
        )));
    }
    Ok(caller)
}

/// `Basic base64(user:password)` → (user, password).
fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = Base64::decode_vec(rest.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::parse_basic;

    #[test]
    fn basic_credentials_are_decoded() {
        // "guest:gu:est" — the password may hold colons.
        assert_eq!(
            parse_basic("Basic Z3Vlc3Q6Z3U6ZXN0"),
            Some(("guest".into(), "gu:est".into()))
        );
        assert_eq!(
            parse_basic("basic  Z3Vlc3Q6Z3U6ZXN0 "),
            Some(("guest".into(), "gu:est".into()))
        );
    }

    #[test]
    fn other_schemes_and_garbage_are_refused() {
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
        // "nocolon"
        assert_eq!(parse_basic("Basic bm9jb2xvbg=="), None);
    }
}
