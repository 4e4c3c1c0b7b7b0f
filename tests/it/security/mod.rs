//! Security: TLS on the native, AMQP and HTTP listeners (certificates made in the test
//! with rcgen), the EXTERNAL mechanism, limits, the refusals of failed logins,
//! permissions, and hostile clients.

pub(crate) mod amqp_raw;
mod channel_limits;
mod dual_stack;
mod external;
mod hostile;
mod https;
mod limits;
mod permissions;
mod permissions_http;
pub(crate) mod pki;
mod tls;
mod user_hash;
mod vhost_limits;
