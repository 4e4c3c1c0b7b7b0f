//! Errors as RabbitMQ's management API writes them: a status code and
//! `{"error": "not_found", "reason": "..."}`, logged once where they are made.

use crate::error::{BrokerError, ErrorCode};
use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError};

/// A refused or failed request.
#[derive(Debug, thiserror::Error)]
#[error("{error}: {reason}")]
pub(crate) struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// RabbitMQ's short error word (`not_found`, `bad_request`, `not_authorised`, ...).
    pub error: &'static str,
    /// What went wrong, for a human.
    pub reason: String,
    /// A 401 asks for credentials (`WWW-Authenticate`), unless the caller is a script
    /// page (`X-Requested-With`), for which a browser would pop up its own dialog.
    pub challenge: bool,
}

impl ApiError {
    /// An error with a status, a short word and a reason.
    pub fn new(status: StatusCode, error: &'static str, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            reason: reason.into(),
            challenge: true,
        }
    }

    /// 400: the request itself is wrong (bad JSON, bad argument).
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", reason)
    }

    /// 404: no such object.
    pub fn not_found(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", reason)
    }

    /// 401: no or wrong credentials (the client is asked for them).
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "not_authorised", reason)
    }

    /// 403: authenticated, but its tags or permissions do not allow this.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "not_authorised", reason)
    }
}

impl From<BrokerError> for ApiError {
    /// ACCESS_REFUSED (a permission, a reserved name) is 401 `not_authorised`, as
    /// RabbitMQ's management plugin answers a refused channel operation; the client
    /// is not asked for other credentials (the ones it gave are right).
    fn from(e: BrokerError) -> Self {
        if e.code() == ErrorCode::AccessRefused {
            let mut refused = ApiError::unauthorized(e.to_string());
            refused.challenge = false;
            return refused;
        }
        let (status, error) = match e.code() {
            ErrorCode::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorCode::PreconditionFailed
            | ErrorCode::ResourceLocked
            | ErrorCode::NotAllowed
            | ErrorCode::FrameTooLarge => (StatusCode::BAD_REQUEST, "bad_request"),
            ErrorCode::ResourceError | ErrorCode::ConnectionForced => {
                (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        };
        ApiError::new(status, error, e.to_string())
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        ApiError::from(BrokerError::from(e))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, reason = %self.reason, "management API error");
        } else {
            tracing::debug!(status = %self.status, reason = %self.reason, "management API refused a request");
        }
        let mut res = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED && self.challenge {
            res.insert_header((
                header::WWW_AUTHENTICATE,
                "Basic realm=\"actormq management\"",
            ));
        }
        res.json(serde_json::json!({ "error": self.error, "reason": self.reason }))
    }
}

/// The answer for a path nobody serves (RabbitMQ's own words).
pub(crate) async fn no_route(req: HttpRequest) -> HttpResponse {
    ApiError::not_found(format!("no endpoint {} {}", req.method(), req.path())).error_response()
}

/// Parses an optional JSON body: empty = `T::default()`; bad JSON is a 400 naming why.
pub(crate) fn body<T: serde::de::DeserializeOwned + Default>(raw: &[u8]) -> Result<T, ApiError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(raw).map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))
}
