//! Security: TLS on the native and AMQP listeners (certificates made in the test with
//! rcgen), connection limits, the refusals of failed logins, and hostile clients.

pub(crate) mod amqp_raw;
mod hostile;
mod limits;
mod pki;
mod tls;
