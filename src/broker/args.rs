//! Helpers for declare arguments (`x-...` tables): comparison for redeclare checks.

use crate::message::FieldTable;

/// The first key whose value differs between two argument tables (present in one and
/// not the other, or unequal), if any.
pub fn table_difference(current: &FieldTable, requested: &FieldTable) -> Option<String> {
    for (k, v) in current {
        if requested.get(k) != Some(v) {
            return Some(k.clone());
        }
    }
    requested
        .keys()
        .find(|k| !current.contains_key(*k))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::FieldValue;

    #[test]
    fn names_the_differing_key() {
        let mut a = FieldTable::new();
        a.insert("x-message-ttl".into(), FieldValue::Int(1000));
        let mut b = a.clone();
        assert_eq!(table_difference(&a, &b), None);
        b.insert("x-max-length".into(), FieldValue::Int(5));
        assert_eq!(table_difference(&a, &b).as_deref(), Some("x-max-length"));
        b.remove("x-max-length");
        b.insert("x-message-ttl".into(), FieldValue::Int(5));
        assert_eq!(table_difference(&a, &b).as_deref(), Some("x-message-ttl"));
    }
}
