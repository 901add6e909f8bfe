//! Trunks: who may call in, and how calls go out. For dial-in a trunk names the source
//! addresses it accepts calls from and/or the digest credentials a caller must prove, and
//! optionally the dialled numbers it carries; a call matching no trunk is refused (403), a
//! trunk with credentials challenges (401). A trunk's `outbound` part ([`super::outbound`])
//! makes it a way out for dial-out. A trunk may be either or both.

use std::net::IpAddr;
use std::time::Instant;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::outbound::{Outbound, OutboundError, OutboundSpec};
use crate::digest::{self, Challenged, Nonces, Verdict};
use crate::sdp::MediaEncryption;

/// A trunk as configured or created through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkSpec {
    /// Set for trunks from the configuration file; generated for API-created ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    /// Networks calls may come from (`127.0.0.0/8`, `10.1.2.3/32`); empty: any address.
    #[serde(default)]
    pub allowed_addresses: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Dialled numbers (request-URI user parts) this trunk carries; empty: any.
    #[serde(default)]
    pub numbers: Vec<String>,
    /// Set to place calls through this trunk (dial-out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<OutboundSpec>,
    /// SRTP on this trunk's calls, both ways: `off`, `optional` (the default) or `required`.
    #[serde(default, skip_serializing_if = "MediaEncryption::is_optional")]
    pub media_encryption: MediaEncryption,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrunkError {
    #[error("name must not be empty")]
    NoName,
    #[error(
        "a trunk needs allowed_addresses, or a username and password, or both (for dial-in), or an outbound part (for dial-out)"
    )]
    Unrestricted,
    #[error("username and password go together")]
    HalfCredentials,
    #[error("outbound: {0}")]
    Outbound(#[from] OutboundError),
}

/// A trunk in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trunk {
    pub id: String,
    pub name: String,
    pub allowed_addresses: Vec<IpNet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip)]
    pub password: Option<String>,
    pub numbers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound: Option<Outbound>,
    pub media_encryption: MediaEncryption,
}

impl Trunk {
    pub fn from_spec(spec: TrunkSpec) -> Result<Trunk, TrunkError> {
        if spec.name.trim().is_empty() {
            return Err(TrunkError::NoName);
        }
        if spec.username.is_some() != spec.password.is_some() {
            return Err(TrunkError::HalfCredentials);
        }
        if spec.allowed_addresses.is_empty() && spec.username.is_none() && spec.outbound.is_none() {
            return Err(TrunkError::Unrestricted);
        }
        let outbound = spec.outbound.map(Outbound::from_spec).transpose()?;
        Ok(Trunk {
            id: spec.id.unwrap_or_else(|| junction_core::ids::random_id("ST_", 12)),
            name: spec.name,
            allowed_addresses: spec.allowed_addresses,
            username: spec.username,
            password: spec.password,
            numbers: spec.numbers.into_iter().map(|n| n.trim().to_owned()).collect(),
            outbound,
            media_encryption: spec.media_encryption,
        })
    }

    /// The API's view: everything but the passwords, which are reported only as present.
    pub fn describe(&self) -> serde_json::Value {
        let mut value = serde_json::json!(self);
        value["digest_auth"] = serde_json::json!(self.password.is_some());
        if let Some(outbound) = &self.outbound {
            value["outbound"]["digest_auth"] = serde_json::json!(outbound.password.is_some());
        }
        value
    }

    /// Whether this trunk admits calls at all: an outbound-only trunk (no addresses, no
    /// credentials) must not read as "any address, no password".
    fn admits_inbound(&self) -> bool {
        !self.allowed_addresses.is_empty() || self.password.is_some()
    }

    fn accepts_address(&self, ip: IpAddr) -> bool {
        self.allowed_addresses.is_empty() || self.allowed_addresses.iter().any(|net| net.contains(&ip))
    }

    fn accepts_number(&self, called: &str) -> bool {
        self.numbers.is_empty() || self.numbers.iter().any(|n| n == called)
    }
}

/// What an INVITE says about who is calling.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub source: IpAddr,
    /// The dialled user part of the request URI.
    pub called: &'a str,
    /// The Request-URI, which a digest answer must name.
    pub request_uri: &'a str,
    /// The Authorization header, if the caller sent one.
    pub authorization: Option<&'a str>,
}

/// The trunk decision for one INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrunkDecision {
    Accepted {
        trunk: String,
    },
    /// Credentials are needed (or were stale): answer 401 with a fresh challenge.
    Challenge {
        stale: bool,
    },
    /// 403, with the reason.
    Forbidden(String),
}

/// Finds the trunk an INVITE arrives on.
pub fn select(trunks: &[Trunk], caller: Caller<'_>, nonces: &mut Nonces, realm: &str, now: Instant) -> TrunkDecision {
    let candidates: Vec<&Trunk> = trunks
        .iter()
        .filter(|t| t.admits_inbound() && t.accepts_address(caller.source) && t.accepts_number(caller.called))
        .collect();
    if candidates.is_empty() {
        return TrunkDecision::Forbidden(format!(
            "no trunk accepts calls from {} to {:?}",
            caller.source, caller.called
        ));
    }
    if let Some(open) = candidates.iter().find(|t| t.password.is_none()) {
        return TrunkDecision::Accepted { trunk: open.id.clone() };
    }
    let Some(authorization) = caller.authorization else {
        return TrunkDecision::Challenge { stale: false };
    };
    let Some(user) = digest::username(authorization) else {
        return TrunkDecision::Challenge { stale: false };
    };
    let Some(trunk) = candidates.iter().find(|t| t.username.as_deref() == Some(user.as_str())) else {
        return TrunkDecision::Forbidden(format!("no trunk has the user name {user:?}"));
    };
    let password = trunk.password.as_deref().unwrap_or_default();
    let request = Challenged { method: "INVITE", uri: caller.request_uri, realm };
    match nonces.verify(authorization, request, password, now) {
        Verdict::Valid => TrunkDecision::Accepted { trunk: trunk.id.clone() },
        Verdict::Stale => TrunkDecision::Challenge { stale: true },
        Verdict::UriMismatch => {
            TrunkDecision::Forbidden(format!("the digest uri is not the Request-URI {}", caller.request_uri))
        }
        // RFC 3261 §22.3: credentials that do not verify get a new challenge.
        Verdict::Invalid => TrunkDecision::Challenge { stale: false },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(name: &str, nets: &[&str], creds: Option<(&str, &str)>, numbers: &[&str]) -> Trunk {
        Trunk::from_spec(TrunkSpec {
            id: Some(name.into()),
            name: name.into(),
            allowed_addresses: nets.iter().map(|n| n.parse().unwrap()).collect(),
            username: creds.map(|c| c.0.into()),
            password: creds.map(|c| c.1.into()),
            numbers: numbers.iter().map(|n| n.to_string()).collect(),
            outbound: None,
            media_encryption: Default::default(),
        })
        .unwrap()
    }

    const ROOM_URI: &str = "sip:room@x";

    fn caller<'a>(ip: &str, called: &'a str, authorization: Option<&'a str>) -> Caller<'a> {
        Caller { source: ip.parse().unwrap(), called, request_uri: ROOM_URI, authorization }
    }

    #[test]
    fn address_and_number_lists_select_the_trunk() {
        let mut nonces = Nonces::new(16);
        let now = Instant::now();
        let trunks = [trunk("lan", &["10.0.0.0/8"], None, &[]), trunk("sales", &["127.0.0.0/8"], None, &["100"])];
        let mut pick = |ip, called| select(&trunks, caller(ip, called, None), &mut nonces, "junction", now);
        assert_eq!(pick("10.1.2.3", "x"), TrunkDecision::Accepted { trunk: "lan".into() });
        assert_eq!(pick("127.0.0.1", "100"), TrunkDecision::Accepted { trunk: "sales".into() });
        assert!(matches!(pick("127.0.0.1", "200"), TrunkDecision::Forbidden(reason) if reason.contains("127.0.0.1")));
        assert!(matches!(pick("192.168.0.1", "100"), TrunkDecision::Forbidden(_)));
    }

    #[test]
    fn credentials_are_challenged_then_checked() {
        let mut nonces = Nonces::new(16);
        let now = Instant::now();
        let trunks = [trunk("carrier", &[], Some(("acme", "pw")), &[])];
        let decide =
            |nonces: &mut Nonces, auth| select(&trunks, caller("192.0.2.1", "room", auth), nonces, "junction", now);
        assert_eq!(decide(&mut nonces, None), TrunkDecision::Challenge { stale: false });
        let answer = |nonces: &mut Nonces, uri: &str, user: &str, password: &str| {
            let challenge = nonces.challenge("junction", now, false);
            crate::digest::authorize(&challenge, "INVITE", uri, user, password).unwrap()
        };
        let good = answer(&mut nonces, ROOM_URI, "acme", "pw");
        assert_eq!(decide(&mut nonces, Some(&good)), TrunkDecision::Accepted { trunk: "carrier".into() });
        assert_eq!(decide(&mut nonces, Some(&good)), TrunkDecision::Challenge { stale: true }, "a replay");
        let wrong = answer(&mut nonces, ROOM_URI, "acme", "nope");
        assert_eq!(decide(&mut nonces, Some(&wrong)), TrunkDecision::Challenge { stale: false });
        let stranger = answer(&mut nonces, ROOM_URI, "mallory", "pw");
        assert!(matches!(decide(&mut nonces, Some(&stranger)), TrunkDecision::Forbidden(_)));
        let elsewhere = answer(&mut nonces, "sip:other-room@x", "acme", "pw");
        assert!(
            matches!(decide(&mut nonces, Some(&elsewhere)), TrunkDecision::Forbidden(why) if why.contains("Request-URI"))
        );
    }

    #[test]
    fn an_outbound_only_trunk_admits_no_one() {
        let mut nonces = Nonces::new(4);
        let spec = TrunkSpec {
            id: Some("out".into()),
            name: "out".into(),
            allowed_addresses: vec![],
            username: None,
            password: None,
            numbers: vec![],
            outbound: Some(OutboundSpec {
                address: "192.0.2.9".into(),
                transport: Default::default(),
                register: false,
                register_expires_s: 3600,
                username: None,
                password: None,
                destinations: vec!["+1".into()],
                caller_ids: vec!["+15550100".into()],
            }),
            media_encryption: Default::default(),
        };
        let trunks = [Trunk::from_spec(spec).unwrap()];
        let decision = select(&trunks, caller("192.0.2.9", "x", None), &mut nonces, "junction", Instant::now());
        assert!(matches!(decision, TrunkDecision::Forbidden(_)), "{decision:?}");
    }

    #[test]
    fn specs_are_validated() {
        let spec = |nets: Vec<IpNet>, user: Option<&str>, pass: Option<&str>| TrunkSpec {
            id: None,
            name: "t".into(),
            allowed_addresses: nets,
            username: user.map(Into::into),
            password: pass.map(Into::into),
            numbers: vec![],
            outbound: None,
            media_encryption: Default::default(),
        };
        assert_eq!(Trunk::from_spec(spec(vec![], None, None)), Err(TrunkError::Unrestricted));
        assert_eq!(Trunk::from_spec(spec(vec![], Some("u"), None)), Err(TrunkError::HalfCredentials));
        let made = Trunk::from_spec(spec(vec![], Some("u"), Some("p"))).unwrap();
        assert!(made.id.starts_with("ST_"));
        let shown = made.describe();
        assert!(shown.get("password").is_none());
        assert_eq!(shown["digest_auth"], true);
    }
}
