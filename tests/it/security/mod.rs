//! Security: TLS on the native and AMQP listeners (certificates made in the test with
//! rcgen), connection limits, and the refusals of failed logins.

pub(crate) mod amqp_raw;
mod limits;
mod pki;
mod tls;
