//! The definitions import: RabbitMQ's JSON format, and the plan that checks every item.

use crate::definitions::format::DefinitionsFile;
use crate::definitions::transfer::{export_broker, export_vhost, plan};
use crate::definitions::{BrokerDefinitions, VhostDefinitions};
use std::collections::HashMap;

/// A broker with the default vhost and nothing in it.
fn fresh() -> (BrokerDefinitions, HashMap<String, VhostDefinitions>) {
    let broker = BrokerDefinitions::new(["/".to_string()], []);
    let vhosts = HashMap::from([("/".to_string(), VhostDefinitions::new("/"))]);
    (broker, vhosts)
}

fn known_type(kind: &str) -> bool {
    matches!(kind, "direct" | "fanout" | "topic" | "headers")
}

/// Parses `data` as a definitions file (as `POST /api/definitions` does) and plans its
/// import into a fresh broker, broker-wide and into one vhost. A file whose plan is
/// accepted applies without error, and what the broker then exports imports again.
pub fn definitions(data: &[u8]) {
    let Ok(file) = serde_json::from_slice::<DefinitionsFile>(data) else {
        return;
    };
    let (broker, vhosts) = fresh();
    let _ = plan(file.clone(), Some("/"), &broker, &vhosts, known_type);
    let Ok(planned) = plan(file, None, &broker, &vhosts, known_type) else {
        return;
    };
    let mut b = broker.clone();
    for cmd in planned.broker {
        b.apply(cmd).expect("a planned broker command applies");
    }
    let mut defs = vhosts.clone();
    for (v, cmds) in planned.vhosts {
        let d = defs
            .entry(v.clone())
            .or_insert_with(|| VhostDefinitions::new(&v));
        for cmd in cmds {
            d.apply(cmd).expect("a planned command applies");
        }
    }
    let mut out = DefinitionsFile::default();
    export_broker(&mut out, &b);
    for d in defs.values() {
        export_vhost(&mut out, d, true);
    }
    let json = serde_json::to_vec(&out).expect("an export serialises");
    let again: DefinitionsFile = serde_json::from_slice(&json).expect("an export parses");
    let (broker, vhosts) = fresh();
    if let Err(e) = plan(again, None, &broker, &vhosts, known_type) {
        panic!("the export of an accepted import is refused: {e}");
    }
}
