//! What this process knows of the Redis store's records: every record it wrote, loaded or heard
//! another node write, and not removed since. It exists for one case: Redis coming back empty
//! (restarted without persistence, or flushed), when every node writes back what it knows.

use std::collections::HashMap;

use parking_lot::Mutex;

use super::Op;
use crate::{Change, Kind, Record};

#[derive(Default)]
pub(crate) struct Mirror {
    records: Mutex<HashMap<(Kind, String), Record>>,
}

impl Mirror {
    pub(crate) fn wrote(&self, op: &Op) {
        let mut records = self.records.lock();
        match op {
            Op::Put { kind, record } => {
                records.insert((*kind, record.id.clone()), record.clone());
            }
            Op::Remove { kind, id } => {
                records.remove(&(*kind, id.clone()));
            }
        }
    }

    /// `listed` is what Redis holds of `kind` (of `scope`, if given). With `complete`, that is
    /// all there is of it: known records missing from it (removed by another node while this
    /// one did not hear, as during an outage) are forgotten, so a refill never brings them back.
    /// (Not complete while this node's own writes still wait in the outbox.)
    pub(crate) fn loaded(&self, kind: Kind, scope: Option<&str>, listed: &[Record], complete: bool) {
        let mut records = self.records.lock();
        if complete {
            records.retain(|(k, _), record| *k != kind || scope.is_some_and(|s| record.scope != s));
        }
        for record in listed {
            records.insert((kind, record.id.clone()), record.clone());
        }
    }

    pub(crate) fn learn(&self, change: &Change) {
        match change {
            Change::Put { kind, record } => self.wrote(&Op::Put { kind: *kind, record: record.clone() }),
            Change::Removed { kind, id } => self.wrote(&Op::Remove { kind: *kind, id: id.clone() }),
            Change::Resync => {}
        }
    }

    /// Every known record, as writes.
    pub(crate) fn ops(&self) -> Vec<Op> {
        self.records.lock().iter().map(|((kind, _), record)| Op::Put { kind: *kind, record: record.clone() }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, scope: &str) -> Record {
        Record { id: id.into(), scope: scope.into(), body: "{}".into() }
    }

    fn ids(mirror: &Mirror) -> Vec<String> {
        let mut ids: Vec<String> = mirror
            .ops()
            .into_iter()
            .map(|op| match op {
                Op::Put { record, .. } => record.id,
                Op::Remove { id, .. } => id,
            })
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn a_complete_listing_forgets_what_another_node_removed_unheard() {
        let mirror = Mirror::default();
        mirror.loaded(Kind::Ingress, None, &[record("IN_a", ""), record("IN_b", "")], true);
        mirror.loaded(Kind::WebhookDelivery, None, &[record("D_n1", "n1"), record("D_n2", "n2")], true);
        // IN_b was removed while this node did not hear: the next full listing lacks it.
        mirror.loaded(Kind::Ingress, None, &[record("IN_a", "")], true);
        assert_eq!(ids(&mirror), ["D_n1", "D_n2", "IN_a"]);
        // A listing of one scope only speaks for that scope.
        mirror.loaded(Kind::WebhookDelivery, Some("n1"), &[], true);
        assert_eq!(ids(&mirror), ["D_n2", "IN_a"]);
        // With this node's own writes still queued, a listing may lack them: nothing forgotten.
        mirror.loaded(Kind::Ingress, None, &[], false);
        assert_eq!(ids(&mirror), ["D_n2", "IN_a"]);
    }
}
