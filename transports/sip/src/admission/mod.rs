//! Who may call in and where their calls go: [`trunks`] admit or challenge a caller,
//! [`rules`] send an admitted call to a room (and maybe ask for a PIN); and where calls may go
//! out: [`outbound`] routes a dial-out request through a trunk (or, if the operator allows it,
//! straight to a listed host). Trunks and rules live in a
//! [`Directory`] shared by the SIP stack and the REST API; entries from the configuration
//! file are loaded at start and can be listed and deleted like API-created ones.

pub mod outbound;
pub mod rules;
pub mod trunks;

use std::sync::Arc;

use parking_lot::RwLock;

pub use outbound::{DialAsk, DialRefusal, DirectDial, OutboundSpec, Route};
pub use rules::{Destination, DispatchError, Rule, RuleError, RuleSpec};
pub use trunks::{Caller, Trunk, TrunkDecision, TrunkError, TrunkSpec};

/// Trunks and dispatch rules. Cheap to clone; every clone is the same directory.
#[derive(Clone, Default)]
pub struct Directory {
    trunks: Arc<RwLock<Vec<Trunk>>>,
    rules: Arc<RwLock<Vec<Rule>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    #[error("trunk: {0}")]
    Trunk(#[from] TrunkError),
    #[error("dispatch rule: {0}")]
    Rule(#[from] RuleError),
    #[error("{what} id {id:?} is used twice")]
    DuplicateId { what: &'static str, id: String },
}

impl Directory {
    /// A directory holding the configured trunks and rules.
    pub fn from_config(trunks: &[TrunkSpec], rules: &[RuleSpec]) -> Result<Directory, DirectoryError> {
        let directory = Directory::default();
        for spec in trunks {
            directory.add_trunk(spec.clone())?;
        }
        for spec in rules {
            directory.add_rule(spec.clone())?;
        }
        Ok(directory)
    }

    pub fn add_trunk(&self, spec: TrunkSpec) -> Result<Trunk, DirectoryError> {
        let trunk = Trunk::from_spec(spec)?;
        let mut trunks = self.trunks.write();
        if trunks.iter().any(|t| t.id == trunk.id) {
            return Err(DirectoryError::DuplicateId { what: "trunk", id: trunk.id });
        }
        trunks.push(trunk.clone());
        Ok(trunk)
    }

    pub fn trunks(&self) -> Vec<Trunk> {
        self.trunks.read().clone()
    }

    pub fn trunk(&self, id: &str) -> Option<Trunk> {
        self.trunks.read().iter().find(|t| t.id == id).cloned()
    }

    pub fn remove_trunk(&self, id: &str) -> Option<Trunk> {
        let mut trunks = self.trunks.write();
        let at = trunks.iter().position(|t| t.id == id)?;
        Some(trunks.remove(at))
    }

    pub fn add_rule(&self, spec: RuleSpec) -> Result<Rule, DirectoryError> {
        let rule = Rule::from_spec(spec)?;
        let mut rules = self.rules.write();
        if rules.iter().any(|r| r.id == rule.id) {
            return Err(DirectoryError::DuplicateId { what: "dispatch rule", id: rule.id });
        }
        rules.push(rule.clone());
        Ok(rule)
    }

    pub fn rules(&self) -> Vec<Rule> {
        self.rules.read().clone()
    }

    pub fn rule(&self, id: &str) -> Option<Rule> {
        self.rules.read().iter().find(|r| r.id == id).cloned()
    }

    pub fn remove_rule(&self, id: &str) -> Option<Rule> {
        let mut rules = self.rules.write();
        let at = rules.iter().position(|r| r.id == id)?;
        Some(rules.remove(at))
    }

    /// Where a call admitted on `trunk` to `called` from `caller` goes.
    pub fn dispatch(&self, trunk: &str, called: &str, caller: &str) -> Result<Destination, DispatchError> {
        rules::dispatch(&self.rules.read(), trunk, called, caller)
    }
}
