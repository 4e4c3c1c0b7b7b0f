//! Virtual host limits, RabbitMQ's `vhost-limits`: `max-connections` (overriding the
//! broker-wide default `server.max_connections_per_vhost`) and `max-queues`. Kept in
//! the broker-wide definitions (so logins and declarations read them without asking an
//! actor), saved in the metadata snapshot, and exported and imported as RabbitMQ does:
//! a runtime parameter of component `vhost-limits`, named `limits`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// RabbitMQ's component name for vhost limits in the definitions' `parameters`.
pub const COMPONENT: &str = "vhost-limits";
/// The limit names, as RabbitMQ spells them.
pub const NAMES: [&str; 2] = ["max-connections", "max-queues"];

/// A virtual host's limits; `None` = no limit (RabbitMQ's negative value). 0 is a
/// limit: no new connection, or no new queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostLimits {
    /// Connections open to the virtual host at most (both protocols).
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Queues in the virtual host at most (exclusive and server-named ones included).
    #[serde(default)]
    pub max_queues: Option<u32>,
}

impl VhostLimits {
    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        self.max_connections.is_none() && self.max_queues.is_none()
    }

    fn slot(&mut self, name: &str) -> Option<&mut Option<u32>> {
        match name {
            "max-connections" => Some(&mut self.max_connections),
            "max-queues" => Some(&mut self.max_queues),
            _ => None,
        }
    }

    /// Sets (a value of 0 or more) or clears (a negative value) the limit `name`; the
    /// error names what is wrong.
    ///
    /// ```
    /// let mut l = actormq::definitions::VhostLimits::default();
    /// l.set("max-queues", &serde_json::json!(10)).unwrap();
    /// assert_eq!(l.max_queues, Some(10));
    /// l.set("max-queues", &serde_json::json!(-1)).unwrap();
    /// assert!(l.is_empty());
    /// assert!(l.set("max-channels", &serde_json::json!(1)).is_err());
    /// ```
    pub fn set(&mut self, name: &str, value: &Value) -> Result<(), String> {
        let Some(slot) = self.slot(name) else {
            return Err(format!(
                "unknown vhost limit '{}': the limits are {}",
                crate::error::clip(name),
                NAMES.join(", ")
            ));
        };
        let n = value
            .as_i64()
            .ok_or_else(|| format!("{name}: {value} is not an integer"))?;
        *slot = if n < 0 {
            None
        } else {
            Some(u32::try_from(n).map_err(|_| format!("{name}: {n} is larger than {}", u32::MAX))?)
        };
        Ok(())
    }

    /// Clears the limit `name`; false for a name that is no limit.
    pub fn clear(&mut self, name: &str) -> bool {
        match self.slot(name) {
            Some(slot) => {
                *slot = None;
                true
            }
            None => false,
        }
    }

    /// Limits from RabbitMQ's JSON object (`{"max-connections": 10, ...}`), every key
    /// checked.
    pub fn from_json(value: &Value) -> Result<VhostLimits, String> {
        let object = value
            .as_object()
            .ok_or("vhost limits must be a JSON object such as {\"max-queues\": 10}")?;
        let mut limits = VhostLimits::default();
        for (k, v) in object {
            limits.set(k, v)?;
        }
        Ok(limits)
    }

    /// RabbitMQ's JSON object of the limits set.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(n) = self.max_connections {
            m.insert("max-connections".into(), n.into());
        }
        if let Some(n) = self.max_queues {
            m.insert("max-queues".into(), n.into());
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_and_refusals_name_the_limit() {
        let l = VhostLimits::from_json(&json!({"max-connections": 5, "max-queues": 0})).unwrap();
        assert_eq!((l.max_connections, l.max_queues), (Some(5), Some(0)));
        assert_eq!(VhostLimits::from_json(&l.to_json()).unwrap(), l);
        let e = VhostLimits::from_json(&json!({"max-queues": "ten"})).unwrap_err();
        assert!(e.contains("max-queues"), "{e}");
        let e = VhostLimits::from_json(&json!({"max-queues": 1u64 << 40})).unwrap_err();
        assert!(e.contains("larger"), "{e}");
        assert!(VhostLimits::from_json(&json!([1])).is_err());
    }
}
