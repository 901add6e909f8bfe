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

    pub(crate) fn loaded(&self, kind: Kind, listed: &[Record]) {
        let mut records = self.records.lock();
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
