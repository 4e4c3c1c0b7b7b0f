//! Security: TLS on the native, AMQP and HTTP listeners (certificates made in the test
//! with rcgen), the EXTERNAL mechanism, limits, and the refusals of failed logins.

pub(crate) mod amqp_raw;
mod channel_limits;
mod external;
mod https;
mod limits;
mod pki;
mod tls;
mod user_hash;
mod vhost_limits;
