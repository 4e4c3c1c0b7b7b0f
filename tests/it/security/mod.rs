//! Security: TLS on the native and AMQP listeners (certificates made in the test with
//! rcgen), connection limits, the refusals of failed logins, and permissions.

pub(crate) mod amqp_raw;
mod limits;
mod permissions;
mod permissions_http;
mod pki;
mod tls;
