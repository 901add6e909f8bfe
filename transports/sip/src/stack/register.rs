//! Keeping trunks registered: every few seconds the stack compares the trunks that ask for
//! registration (`outbound.register`) with what the user agent keeps, starts the missing ones
//! (resolving a provider's DNS name off the stack's task first) and ends those whose trunk is
//! gone or changed. Each registration's state is kept in the [`RegistrationBook`] the trunk
//! API shows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde::Serialize;
use tracing::{info, warn};

use super::{Command, Stack};
use crate::admission::Trunk;
use crate::calls::now_ms;
use crate::message::Peer;
use crate::ua::register::{Registrar, RegistrationState};

/// A trunk's registration as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistrationStatus {
    /// `registering`, `registered` or `failed` (retrying).
    pub state: &'static str,
    /// The binding lifetime the provider granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_s: Option<u32>,
    /// The last failure's status and reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at_ms: u64,
}

/// Registration states by trunk id, shared with the API.
#[derive(Clone, Default)]
pub struct RegistrationBook(Arc<Mutex<HashMap<String, RegistrationStatus>>>);

impl RegistrationBook {
    pub fn get(&self, trunk: &str) -> Option<RegistrationStatus> {
        self.0.lock().get(trunk).cloned()
    }

    fn set(&self, trunk: &str, state: &RegistrationState) {
        let mut book = self.0.lock();
        let previous = book.get(trunk).cloned();
        let status = match state {
            RegistrationState::Unregistered => {
                book.remove(trunk);
                return;
            }
            RegistrationState::Registering => RegistrationStatus {
                state: "registering",
                expires_s: None,
                status: None,
                reason: None,
                at_ms: now_ms(),
            },
            RegistrationState::Registered { expires } => RegistrationStatus {
                state: "registered",
                expires_s: Some(*expires),
                status: None,
                reason: None,
                at_ms: now_ms(),
            },
            RegistrationState::Failed { code, reason } => RegistrationStatus {
                state: "failed",
                expires_s: previous.and_then(|p| p.expires_s),
                status: Some(*code),
                reason: Some(reason.clone()),
                at_ms: now_ms(),
            },
        };
        book.insert(trunk.to_owned(), status);
    }
}

/// What a trunk asks to register, once its provider's address is known.
fn registrar(trunk: &Trunk, to: SocketAddr) -> Option<Registrar> {
    let outbound = trunk.outbound.as_ref().filter(|o| o.register)?;
    let (host, port) = outbound.host_port();
    Some(Registrar {
        trunk: trunk.id.clone(),
        to: Peer { transport: outbound.transport, addr: to },
        domain: if port == outbound.transport.default_port() { host.to_owned() } else { format!("{host}:{port}") },
        user: outbound.username.clone()?,
        credentials: Some((outbound.username.clone()?, outbound.password.clone()?)),
        expires: outbound.register_expires_s,
    })
}

impl Stack {
    /// Brings the user agent's registrations in line with the trunks.
    pub(super) fn sync_registrations(&mut self) {
        let now = Instant::now();
        let wanted: Vec<Trunk> =
            self.directory.trunks().into_iter().filter(|t| t.outbound.as_ref().is_some_and(|o| o.register)).collect();
        for trunk in self.ua.registered_trunks() {
            let still = wanted.iter().find(|t| t.id == trunk);
            let changed = still.is_none_or(|t| self.registered.get(&trunk) != Some(t));
            if changed {
                info!(trunk, "ending the trunk's registration");
                self.ua.unregister(now, &trunk);
                self.registered.remove(&trunk);
            }
        }
        for trunk in wanted {
            if self.registered.contains_key(&trunk.id) || self.resolving.contains(&trunk.id) {
                continue;
            }
            let Some(outbound) = &trunk.outbound else { continue };
            let (host, port) = outbound.host_port();
            if let Ok(ip) = host.trim_matches(['[', ']']).parse() {
                self.start_registration(trunk.clone(), SocketAddr::new(ip, port));
                continue;
            }
            // A DNS name: resolved on a task of its own, the answer comes back as a command.
            self.resolving.insert(trunk.id.clone());
            let (host, commands) = (host.to_owned(), self.commands_tx.clone());
            tokio::spawn(async move {
                let found = tokio::net::lookup_host((host.as_str(), port)).await.ok().and_then(|mut a| a.next());
                let _ = commands.send(Command::Resolved { trunk: Box::new(trunk), addr: found }).await;
            });
        }
    }

    pub(super) fn start_registration(&mut self, trunk: Trunk, addr: SocketAddr) {
        self.resolving.remove(&trunk.id);
        let Some(spec) = registrar(&trunk, addr) else { return };
        info!(trunk = %trunk.id, registrar = %spec.to, aor = %format!("{}@{}", spec.user, spec.domain), "registering the trunk");
        self.registered.insert(trunk.id.clone(), trunk);
        self.ua.register(Instant::now(), spec);
    }

    pub(super) fn resolved(&mut self, trunk: Trunk, addr: Option<SocketAddr>) {
        match addr {
            Some(addr) => self.start_registration(trunk, addr),
            None => {
                self.resolving.remove(&trunk.id);
                warn!(trunk = %trunk.id, "cannot resolve the trunk's registrar; trying again shortly");
                let state =
                    RegistrationState::Failed { code: 503, reason: "the registrar's name does not resolve".into() };
                self.registrations.set(&trunk.id, &state);
            }
        }
    }

    pub(super) fn registration_changed(&mut self, trunk: &str, state: &RegistrationState) {
        match state {
            RegistrationState::Registered { expires } => info!(trunk, expires, "trunk registered"),
            RegistrationState::Failed { code, reason } => {
                warn!(trunk, code, %reason, "trunk registration failed; retrying")
            }
            _ => {}
        }
        self.registrations.set(trunk, state);
    }
}
