//! `[limits]`: bounds on what one client may make the broker hold that no other
//! setting covers: consumers per channel (RabbitMQ's `consumer_max_per_channel`) and
//! the shape of a message's headers table (nesting depth, encoded size), in both
//! protocols.

use super::SettingsError;
use serde::Deserialize;

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSettings {
    /// Consumers one channel may have at once (a native connection is one channel);
    /// 0 = no limit, RabbitMQ's default.
    pub consumer_max_per_channel: usize,
    /// Levels of tables and arrays a message's headers may nest (the headers table
    /// itself is level 1). At least 1.
    pub max_header_depth: usize,
    /// Bytes a message's headers take encoded (AMQP's field-table encoding). At least
    /// 1024.
    pub max_header_bytes: usize,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        LimitsSettings {
            consumer_max_per_channel: 0,
            max_header_depth: 16,
            max_header_bytes: 1024 * 1024,
        }
    }
}

impl LimitsSettings {
    /// Checks what serde cannot.
    pub(super) fn check(&self) -> Result<(), SettingsError> {
        if self.max_header_depth == 0 {
            return Err(SettingsError(
                "limits.max_header_depth must be at least 1".into(),
            ));
        }
        if self.max_header_bytes < 1024 {
            return Err(SettingsError(
                "limits.max_header_bytes must be at least 1024".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::Settings;

    #[test]
    fn header_limits_have_floors() {
        let e = Settings::from_toml("[limits]\nmax_header_depth = 0").unwrap_err();
        assert!(e.to_string().contains("limits.max_header_depth"), "{e}");
        let e = Settings::from_toml("[limits]\nmax_header_bytes = 10").unwrap_err();
        assert!(e.to_string().contains("limits.max_header_bytes"), "{e}");
        let s = Settings::from_toml("[limits]\nconsumer_max_per_channel = 3").unwrap();
        assert_eq!(s.limits.consumer_max_per_channel, 3);
    }
}
