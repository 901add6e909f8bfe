//! SIP trunks and dispatch rules created through the API, kept in the server's state store:
//! loaded into the [`Directory`] at start (after the configuration file's), written through by
//! the REST routes, and — in a cluster, where the store is the shared Redis — other nodes'
//! writes applied as they are published, with a full reload after the store was away.
//! Entries from the configuration file are never stored: the file is their source.

use std::collections::HashSet;
use std::sync::Arc;

use junction_store::{Change, Kind, Store, StoreError};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admission::{Directory, RuleSpec, TrunkSpec};

/// The ids the configuration file gave its trunks and rules: a reload leaves them alone.
#[derive(Clone, Default)]
pub(crate) struct ConfigIds {
    trunks: Arc<HashSet<String>>,
    rules: Arc<HashSet<String>>,
}

impl ConfigIds {
    pub(crate) fn of(directory: &Directory) -> ConfigIds {
        ConfigIds {
            trunks: Arc::new(directory.trunks().into_iter().map(|t| t.id).collect()),
            rules: Arc::new(directory.rules().into_iter().map(|r| r.id).collect()),
        }
    }
}

/// Puts the stored trunks and rules into `directory`; one that no longer validates (or clashes
/// with a configured id) is skipped with a warning rather than keeping SIP down.
pub(crate) async fn load(store: &Store, directory: &Directory) -> Result<(), StoreError> {
    let (trunks, rules) = fetch(store).await?;
    add(directory, trunks, rules);
    Ok(())
}

/// Every stored trunk and rule.
async fn fetch(store: &Store) -> Result<(Vec<TrunkSpec>, Vec<RuleSpec>), StoreError> {
    Ok((store.list(Kind::SipTrunk, None).await?, store.list(Kind::SipDispatchRule, None).await?))
}

fn add(directory: &Directory, trunks: Vec<TrunkSpec>, rules: Vec<RuleSpec>) {
    let (trunk_count, rule_count) = (trunks.len(), rules.len());
    for spec in trunks {
        if let Err(err) = directory.add_trunk(spec) {
            warn!("stored SIP trunk not loaded: {err}");
        }
    }
    for spec in rules {
        if let Err(err) = directory.add_rule(spec) {
            warn!("stored SIP dispatch rule not loaded: {err}");
        }
    }
    if trunk_count + rule_count > 0 {
        info!(trunks = trunk_count, dispatch_rules = rule_count, "SIP trunks and rules restored");
    }
}

/// Applies other nodes' trunk and rule writes to `directory` until shutdown.
pub(crate) fn follow(store: Store, directory: Directory, config_ids: ConfigIds, shutdown: CancellationToken) {
    let mut changes = store.changes();
    tokio::spawn(async move {
        loop {
            let change = tokio::select! {
                _ = shutdown.cancelled() => return,
                change = changes.recv() => change,
            };
            let change = match change {
                Ok(change) => change,
                Err(broadcast::error::RecvError::Lagged(_)) => Change::Resync,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            apply(&store, &directory, &config_ids, change).await;
        }
    });
}

async fn apply(store: &Store, directory: &Directory, config_ids: &ConfigIds, change: Change) {
    match change {
        Change::Put { kind: Kind::SipTrunk, record } => {
            if let Some(spec) = junction_store::decode::<TrunkSpec>(Kind::SipTrunk, &record) {
                directory.remove_trunk(&record.id);
                if let Err(err) = directory.add_trunk(spec) {
                    warn!(id = record.id, "SIP trunk from another node not applied: {err}");
                }
            }
        }
        Change::Removed { kind: Kind::SipTrunk, id } => {
            directory.remove_trunk(&id);
        }
        Change::Put { kind: Kind::SipDispatchRule, record } => {
            if let Some(spec) = junction_store::decode::<RuleSpec>(Kind::SipDispatchRule, &record) {
                directory.remove_rule(&record.id);
                if let Err(err) = directory.add_rule(spec) {
                    warn!(id = record.id, "SIP dispatch rule from another node not applied: {err}");
                }
            }
        }
        Change::Removed { kind: Kind::SipDispatchRule, id } => {
            directory.remove_rule(&id);
        }
        Change::Resync => {
            // Read first: if the store is away again, the trunks and rules stay as they are.
            let (trunks, rules) = match fetch(store).await {
                Ok(stored) => stored,
                Err(err) => {
                    warn!("SIP trunks and rules not resynchronised: {err}");
                    return;
                }
            };
            for trunk in directory.trunks() {
                if !config_ids.trunks.contains(&trunk.id) {
                    directory.remove_trunk(&trunk.id);
                }
            }
            for rule in directory.rules() {
                if !config_ids.rules.contains(&rule.id) {
                    directory.remove_rule(&rule.id);
                }
            }
            add(directory, trunks, rules);
        }
        Change::Put { .. } | Change::Removed { .. } => {}
    }
}
