//! Outbound registration (RFC 3261 §10): REGISTER with a provider for a trunk, so calls to its
//! numbers reach Junction wherever it runs. Sans-I/O, driven by the user agent's clock: the
//! first REGISTER, a digest answer to a 401/407, a retry with the registrar's `Min-Expires`
//! after 423, a refresh before the binding expires (a minute early, or half-way for short
//! ones), a retry with doubling back-off (1 s up to 5 min) after a failure or no answer, and
//! `Expires: 0` when the trunk goes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rsip::headers::UntypedHeader;
use rsip::{Header, Method, Response, headers};

use super::{UaEvent, UserAgent, dialog};
use crate::message::build::{self, RequestSpec};
use crate::message::{Peer, header_value};
use crate::transaction::ClientKey;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// Digest answers per REGISTER before the attempt counts as failed (a second challenge in a
/// row means the credentials are wrong).
const MAX_AUTH_TRIES: u8 = 1;

/// What to register, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registrar {
    /// The trunk's id: registrations are kept per trunk.
    pub trunk: String,
    /// Where REGISTER goes.
    pub to: Peer,
    /// The registrar's domain (`host` or `host:port`): the Request-URI and the AOR's host.
    pub domain: String,
    /// The AOR's user part (the trunk's username).
    pub user: String,
    pub credentials: Option<(String, String)>,
    /// The binding lifetime we ask for, in seconds.
    pub expires: u32,
}

/// Where a registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    Registering,
    /// Removed (after `Expires: 0`, or at once if that failed).
    Unregistered,
    Registered {
        expires: u32,
    },
    Failed {
        code: u16,
        reason: String,
    },
}

struct Registration {
    spec: Registrar,
    call_id: String,
    tag: String,
    cseq: u32,
    /// The last challenge (header name to answer with, challenge), reused on refreshes.
    challenge: Option<(&'static str, String)>,
    auth_tries: u8,
    /// The lifetime asked for next (a 423 raises it).
    asking: u32,
    /// When to send the next REGISTER (refresh or retry); `None` while one is out.
    next: Option<Instant>,
    backoff: Duration,
    /// Being removed: the REGISTER out says `Expires: 0`.
    removing: bool,
}

/// The registrations the user agent keeps.
#[derive(Default)]
pub(super) struct Registrations {
    by_trunk: HashMap<String, Registration>,
    by_txn: HashMap<ClientKey, String>,
}

impl Registrations {
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.by_trunk.values().filter_map(|r| r.next).min()
    }
}

/// How long to wait before refreshing a binding of `expires` seconds.
fn refresh_in(expires: u32) -> Duration {
    let secs = if expires > 120 { expires - 60 } else { (expires / 2).max(1) };
    Duration::from_secs(u64::from(secs))
}

/// The binding lifetime a 2xx grants: our Contact's `expires`, else the Expires header, else
/// what we asked for.
fn granted(response: &Response, asked: u32) -> u32 {
    let from_contact = crate::message::header_values(response, "Contact").iter().find_map(|contact| {
        contact.split(';').skip(1).find_map(|p| {
            let (name, value) = p.split_once('=')?;
            name.trim().eq_ignore_ascii_case("expires").then(|| value.trim().parse::<u32>().ok()).flatten()
        })
    });
    from_contact.or_else(|| header_value(response, "Expires").and_then(|v| v.trim().parse().ok())).unwrap_or(asked)
}

impl UserAgent {
    /// Starts (or restarts, when its details changed) the registration of a trunk.
    pub fn register(&mut self, now: Instant, spec: Registrar) {
        if self.registrations.by_trunk.get(&spec.trunk).is_some_and(|r| r.spec == spec && !r.removing) {
            return;
        }
        let trunk = spec.trunk.clone();
        let registration = Registration {
            call_id: format!("{}@junction", junction_core::ids::random_id("", 20)),
            tag: build::new_tag(),
            cseq: 0,
            challenge: None,
            auth_tries: 0,
            asking: spec.expires,
            next: None,
            backoff: FIRST_RETRY,
            removing: false,
            spec,
        };
        self.registrations.by_trunk.insert(trunk.clone(), registration);
        self.events.push_back(UaEvent::Registration { trunk: trunk.clone(), state: RegistrationState::Registering });
        self.send_register(now, &trunk);
    }

    /// Ends a trunk's registration: `Expires: 0` if it was registered, then forgotten.
    pub fn unregister(&mut self, now: Instant, trunk: &str) {
        let Some(registration) = self.registrations.by_trunk.get_mut(trunk) else { return };
        registration.removing = true;
        self.send_register(now, trunk);
    }

    /// The trunks with a registration (being set up, up, or failing).
    pub fn registered_trunks(&self) -> Vec<String> {
        self.registrations.by_trunk.iter().filter(|(_, r)| !r.removing).map(|(t, _)| t.clone()).collect()
    }

    fn send_register(&mut self, now: Instant, trunk: &str) {
        let Some(registration) = self.registrations.by_trunk.get_mut(trunk) else { return };
        let spec = &registration.spec;
        let local = self.locals.for_transport(spec.to.transport);
        registration.cseq += 1;
        registration.next = None;
        let uri = format!("sip:{}", spec.domain);
        let aor = format!("<sip:{}@{}>", spec.user, spec.domain);
        let expires = if registration.removing { 0 } else { registration.asking };
        let mut extra = vec![Header::Expires(headers::Expires::new(expires.to_string()))];
        if let (Some((answer_name, challenge)), Some((user, password))) = (&registration.challenge, &spec.credentials)
            && let Some(answer) = crate::digest::authorize(challenge, "REGISTER", &uri, user, password)
        {
            extra.push(build::other(answer_name, answer));
        }
        let Ok(target) = rsip::Uri::try_from(uri.as_str()) else { return };
        let contact = dialog::Dialog::contact_as(&spec.user, local, spec.to.transport);
        let request = build::request(RequestSpec {
            method: Method::Register,
            uri: target,
            via: dialog::Dialog::via(local, spec.to.transport, &build::new_branch()),
            from: format!("{aor};tag={}", registration.tag),
            to: aor,
            call_id: registration.call_id.clone(),
            cseq: registration.cseq,
            contact: Some(contact),
            route: Vec::new(),
            extra,
        });
        let to = spec.to;
        match self.txns.send(now, request, to) {
            Some(txn) => {
                self.registrations.by_txn.insert(txn, trunk.to_owned());
            }
            None => self.register_failed(now, trunk, 503, "no room for another transaction".into()),
        }
    }

    /// A final response to a REGISTER, if `key` is one of ours.
    pub(super) fn on_register_response(&mut self, now: Instant, key: &ClientKey, response: &Response) -> bool {
        let Some(trunk) = self.registrations.by_txn.get(key).cloned() else { return false };
        let code = response.status_code.code();
        if code < 200 {
            return true;
        }
        self.registrations.by_txn.remove(key);
        let Some(registration) = self.registrations.by_trunk.get_mut(&trunk) else { return true };
        match code {
            200..=299 if registration.removing => {
                self.registrations.by_trunk.remove(&trunk);
                self.events.push_back(UaEvent::Registration { trunk, state: RegistrationState::Unregistered });
            }
            200..=299 => {
                let expires = granted(response, registration.asking);
                registration.auth_tries = 0;
                registration.backoff = FIRST_RETRY;
                registration.next = Some(now + refresh_in(expires.max(1)));
                self.events
                    .push_back(UaEvent::Registration { trunk, state: RegistrationState::Registered { expires } });
            }
            401 | 407 if registration.spec.credentials.is_some() && registration.auth_tries < MAX_AUTH_TRIES => {
                let (challenge_name, answer_name) = if code == 407 {
                    ("Proxy-Authenticate", "Proxy-Authorization")
                } else {
                    ("WWW-Authenticate", "Authorization")
                };
                match header_value(response, challenge_name) {
                    Some(challenge) => {
                        registration.auth_tries += 1;
                        registration.challenge = Some((answer_name, challenge));
                        self.send_register(now, &trunk);
                    }
                    None => self.register_failed(now, &trunk, code, "a challenge without a challenge header".into()),
                }
            }
            423 => {
                let min = header_value(response, "Min-Expires").and_then(|v| v.trim().parse::<u32>().ok());
                match min.filter(|m| *m > registration.asking && *m <= 86_400) {
                    Some(min) => {
                        registration.asking = min;
                        self.send_register(now, &trunk);
                    }
                    None => self.register_failed(now, &trunk, code, "423 without a usable Min-Expires".into()),
                }
            }
            _ => {
                let reason = match &response.status_code {
                    rsip::StatusCode::Other(_, reason) => reason.clone(),
                    _ => build::reason_phrase(code).to_owned(),
                };
                self.register_failed(now, &trunk, code, reason);
            }
        }
        true
    }

    /// A REGISTER that got no answer at all.
    pub(super) fn on_register_timeout(&mut self, now: Instant, key: &ClientKey) -> bool {
        let Some(trunk) = self.registrations.by_txn.remove(key) else { return false };
        self.register_failed(now, &trunk, 408, "no answer from the registrar".into());
        true
    }

    fn register_failed(&mut self, now: Instant, trunk: &str, code: u16, reason: String) {
        let Some(registration) = self.registrations.by_trunk.get_mut(trunk) else { return };
        if registration.removing {
            // Unregistering is best effort.
            self.registrations.by_trunk.remove(trunk);
            let state = RegistrationState::Unregistered;
            self.events.push_back(UaEvent::Registration { trunk: trunk.to_owned(), state });
            return;
        }
        registration.auth_tries = 0;
        registration.next = Some(now + registration.backoff);
        registration.backoff = (registration.backoff * 2).min(MAX_RETRY);
        let state = RegistrationState::Failed { code, reason };
        self.events.push_back(UaEvent::Registration { trunk: trunk.to_owned(), state });
    }

    /// Refreshes and retries that are due.
    pub(super) fn registrations_due(&mut self, now: Instant) {
        let due: Vec<String> = self
            .registrations
            .by_trunk
            .iter()
            .filter(|(_, r)| r.next.is_some_and(|at| at <= now))
            .map(|(t, _)| t.clone())
            .collect();
        for trunk in due {
            self.send_register(now, &trunk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_come_before_the_binding_expires() {
        assert_eq!(refresh_in(3600), Duration::from_secs(3540));
        assert_eq!(refresh_in(120), Duration::from_secs(60));
        assert_eq!(refresh_in(2), Duration::from_secs(1));
        assert_eq!(refresh_in(1), Duration::from_secs(1));
    }
}
