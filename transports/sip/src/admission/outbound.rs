//! Dial-out: where a call request may go. A call goes out through a trunk's `outbound` part —
//! the provider's address, the digest credentials it challenges for, the E.164 prefixes it may
//! call and the caller ids it may present — or, only when the operator turned it on
//! (`sip.allow_direct_dial`), straight to a SIP URI whose host is in `sip.direct_dial_hosts`.
//! [`route`] decides, sans I/O; each refusal says why and maps to its HTTP status.
//!
//! The carrier-SIP work (issue 21) adds transport, SRTP and registration to [`OutboundSpec`].

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::Trunk;
use crate::message::Transport;

/// The SIP port when an address names none.
const DEFAULT_PORT: u16 = 5060;
/// Longest number accepted (E.164 allows 15 digits; some carriers add a few).
const MAX_NUMBER_DIGITS: usize = 20;

/// A trunk's outbound part as configured or posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundSpec {
    /// The provider's SIP address: `host` or `host:port` (port 5060 by default, 5061 for TLS),
    /// a DNS name or an IP address.
    pub address: String,
    /// How calls reach it: `udp` (the default), `tcp` or `tls` (the provider's certificate must
    /// name `address`'s host, from the system's roots or `sip.tls_ca`).
    #[serde(default, skip_serializing_if = "Transport::is_udp")]
    pub transport: Transport,
    /// REGISTER with the provider at `address` (as `username`, answering its digest
    /// challenge), so that its numbers reach Junction without a fixed address.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub register: bool,
    /// The binding lifetime to ask for (the provider may grant another), 60 to 86400 s.
    #[serde(default = "default_register_expires", skip_serializing_if = "is_default_register_expires")]
    pub register_expires_s: u32,
    /// Digest credentials answering the provider's 401/407 challenges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// E.164 prefixes calls may go to (`+1555`, `+44`); `+` alone allows every `+` number.
    #[serde(default)]
    pub destinations: Vec<String>,
    /// Caller ids calls may present (`+15550100`); a call without `from` presents the first.
    #[serde(default)]
    pub caller_ids: Vec<String>,
}

fn default_register_expires() -> u32 {
    3600
}

fn is_default_register_expires(value: &u32) -> bool {
    *value == default_register_expires()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    #[error("register needs a username and password (the provider's credentials)")]
    RegisterWithoutCredentials,
    #[error("register_expires_s must be 60 to 86400")]
    BadRegisterExpires,
    #[error("address {0:?} is not host or host:port")]
    BadAddress(String),
    #[error("username and password go together")]
    HalfCredentials,
    #[error("destinations must list at least one E.164 prefix (\"+\" allows every number)")]
    NoDestinations,
    #[error("destination prefix {0:?} is not + followed by digits")]
    BadPrefix(String),
    #[error("caller_ids must list at least one caller id")]
    NoCallerIds,
    #[error("caller id {0:?} is not a phone number or a SIP user name")]
    BadCallerId(String),
}

/// A trunk's outbound part in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outbound {
    pub address: String,
    pub transport: Transport,
    pub register: bool,
    pub register_expires_s: u32,
    /// The address's host as written in a SIP URI (IPv6 in brackets) and its port.
    #[serde(skip)]
    host: String,
    #[serde(skip)]
    port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip)]
    pub password: Option<String>,
    pub destinations: Vec<String>,
    pub caller_ids: Vec<String>,
}

impl Outbound {
    pub fn from_spec(spec: OutboundSpec) -> Result<Outbound, OutboundError> {
        let (host, port) = parse_address(&spec.address, spec.transport.default_port())
            .ok_or_else(|| OutboundError::BadAddress(spec.address.clone()))?;
        if spec.username.is_some() != spec.password.is_some() {
            return Err(OutboundError::HalfCredentials);
        }
        if spec.register && spec.username.is_none() {
            return Err(OutboundError::RegisterWithoutCredentials);
        }
        if spec.register && !(60..=86_400).contains(&spec.register_expires_s) {
            return Err(OutboundError::BadRegisterExpires);
        }
        if spec.destinations.is_empty() {
            return Err(OutboundError::NoDestinations);
        }
        let mut destinations = Vec::new();
        for prefix in &spec.destinations {
            let cleaned = strip_separators(prefix);
            let digits = cleaned.strip_prefix('+').unwrap_or(&cleaned);
            if cleaned.is_empty() || digits.len() > MAX_NUMBER_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(OutboundError::BadPrefix(prefix.clone()));
            }
            destinations.push(cleaned);
        }
        if spec.caller_ids.is_empty() {
            return Err(OutboundError::NoCallerIds);
        }
        let caller_ids = spec
            .caller_ids
            .iter()
            .map(|id| caller_id(id).ok_or_else(|| OutboundError::BadCallerId(id.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Outbound {
            address: spec.address.trim().to_owned(),
            transport: spec.transport,
            register: spec.register,
            register_expires_s: spec.register_expires_s,
            host,
            port,
            username: spec.username,
            password: spec.password,
            destinations,
            caller_ids,
        })
    }

    /// The provider's host (as in a SIP URI) and port.
    pub fn host_port(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    fn allows_number(&self, number: &str) -> bool {
        self.destinations.iter().any(|prefix| number.starts_with(prefix.as_str()))
    }

    /// Whether a SIP URI names this trunk's address.
    fn is_at(&self, uri: &rsip::Uri) -> bool {
        let port = uri.port().map_or(DEFAULT_PORT, |p| *p.value());
        uri.host().to_string().eq_ignore_ascii_case(&self.host) && port == self.port
    }
}

/// `host`, `host:port`, an IP address or `ip:port` (`[v6]:port`) -> (URI host, port).
fn parse_address(address: &str, default_port: u16) -> Option<(String, u16)> {
    let address = address.trim();
    if let Ok(socket) = address.parse::<SocketAddr>() {
        return Some((uri_host(socket.ip()), socket.port()));
    }
    if let Ok(ip) = address.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Some((uri_host(ip), default_port));
    }
    let (host, port) = match address.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()?),
        None => (address, default_port),
    };
    let valid = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['-', '.'])
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then(|| (host.to_ascii_lowercase(), port))
}

fn uri_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Removes the visual separators people write numbers with: `+1 (555) 010-0100`.
fn strip_separators(text: &str) -> String {
    text.trim().chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect()
}

/// A dialled number: optional `+`, then 1 to 20 digits, separators removed.
pub fn number(text: &str) -> Option<String> {
    let cleaned = strip_separators(text);
    let digits = cleaned.strip_prefix('+').unwrap_or(&cleaned);
    let valid = !digits.is_empty() && digits.len() <= MAX_NUMBER_DIGITS && digits.bytes().all(|b| b.is_ascii_digit());
    valid.then_some(cleaned)
}

/// A caller id as it goes in our From URI's user part: a number, or a SIP user name of
/// unreserved characters (nothing that could end the URI or the header it sits in).
pub fn caller_id(text: &str) -> Option<String> {
    if let Some(number) = number(text) {
        return Some(number);
    }
    let text = text.trim();
    let valid = !text.is_empty()
        && text.len() <= 64
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'+'));
    valid.then(|| text.to_owned())
}

/// One entry of `sip.direct_dial_hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectHost {
    /// An IP network: matches URIs whose host is an IP address inside it (any port).
    Net(IpNet),
    /// A host name or IP address as written in the URI, and the port if the entry names one.
    Host { host: String, port: Option<u16> },
}

impl DirectHost {
    pub fn parse(entry: &str) -> Option<DirectHost> {
        let entry = entry.trim();
        if let Ok(net) = entry.parse::<IpNet>() {
            return Some(DirectHost::Net(net));
        }
        if let Ok(ip) = entry.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Some(DirectHost::Net(IpNet::from(ip)));
        }
        let (host, port) = parse_address(entry, DEFAULT_PORT)?;
        let named_port = entry.ends_with(&format!(":{port}")).then_some(port);
        Some(DirectHost::Host { host, port: named_port })
    }

    fn matches(&self, uri: &rsip::Uri) -> bool {
        let host = uri.host().to_string();
        match self {
            DirectHost::Net(net) => host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip)),
            DirectHost::Host { host: allowed, port } => {
                allowed.eq_ignore_ascii_case(&host)
                    && port.is_none_or(|p| p == uri.port().map_or(DEFAULT_PORT, |up| *up.value()))
            }
        }
    }
}

/// The operator's direct-dial policy: off unless `sip.allow_direct_dial`, and then only to the
/// hosts listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectDial {
    pub allowed: bool,
    pub hosts: Vec<DirectHost>,
}

impl DirectDial {
    /// The policy from `sip.allow_direct_dial` and `sip.direct_dial_hosts`; an entry that does
    /// not parse is named in the error.
    pub fn from_config(allowed: bool, hosts: &[String]) -> Result<DirectDial, String> {
        let hosts = hosts
            .iter()
            .map(|h| DirectHost::parse(h).ok_or_else(|| format!("{h:?} is not a host, host:port or IP network")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DirectDial { allowed, hosts })
    }
}

/// What a call request asks for.
#[derive(Debug, Clone, Copy)]
pub struct DialAsk<'a> {
    /// A number (`+15551234`, `tel:+15551234`) or a SIP URI.
    pub to: &'a str,
    pub from: Option<&'a str>,
    pub trunk: Option<&'a str>,
}

/// Where a call goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    Trunk { trunk: Box<Trunk>, target: rsip::Uri, caller_id: String },
    Direct { target: rsip::Uri, caller_id: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialRefusal {
    #[error("to: {0}")]
    BadTarget(String),
    #[error("from: {0:?} is not a phone number or a SIP user name")]
    BadCallerId(String),
    #[error("trunk {0} does not exist")]
    TrunkNotFound(String),
    #[error("trunk {0} has no outbound part: it cannot place calls")]
    NotOutbound(String),
    #[error("several trunks place calls: name one in `trunk`")]
    TrunkRequired,
    #[error("no outbound trunk is configured to call {0}")]
    NoOutboundTrunk(String),
    #[error("calls to SIP URIs are off (sip.allow_direct_dial); call a number through an outbound trunk")]
    DirectDialDisabled,
    #[error("{0} is not in sip.direct_dial_hosts")]
    HostNotAllowed(String),
    #[error("{to:?} is not a phone number; trunk {trunk} calls numbers")]
    NotANumber { trunk: String, to: String },
    #[error("{to} is not at trunk {trunk}'s address {address}")]
    NotOnTrunk { trunk: String, to: String, address: String },
    #[error("trunk {trunk} may not call {number} (allowed prefixes: {allowed})")]
    DestinationNotAllowed { trunk: String, number: String, allowed: String },
    #[error("trunk {trunk} may not present caller id {from:?}")]
    CallerIdNotAllowed { trunk: String, from: String },
}

impl DialRefusal {
    /// The HTTP status and error code of the refusal.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            DialRefusal::BadTarget(_) | DialRefusal::BadCallerId(_) => (400, "invalid_field"),
            DialRefusal::TrunkNotFound(_) => (404, "trunk_not_found"),
            DialRefusal::NotOutbound(_) => (422, "trunk_not_outbound"),
            DialRefusal::TrunkRequired => (422, "trunk_required"),
            DialRefusal::NoOutboundTrunk(_) => (422, "no_outbound_trunk"),
            DialRefusal::NotANumber { .. } => (422, "invalid_number"),
            DialRefusal::NotOnTrunk { .. } => (422, "target_not_on_trunk"),
            DialRefusal::DirectDialDisabled => (403, "direct_dial_disabled"),
            DialRefusal::HostNotAllowed(_) => (403, "direct_dial_host_not_allowed"),
            DialRefusal::DestinationNotAllowed { .. } => (403, "destination_not_allowed"),
            DialRefusal::CallerIdNotAllowed { .. } => (403, "caller_id_not_allowed"),
        }
    }
}

/// What `to` names.
enum Called {
    Number(String),
    Uri(rsip::Uri),
}

fn called(to: &str) -> Result<Called, DialRefusal> {
    let to = to.trim();
    let scheme = to.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("sip") => {
            let uri =
                rsip::Uri::try_from(to).map_err(|_| DialRefusal::BadTarget(format!("{to:?} is not a SIP URI")))?;
            Ok(Called::Uri(uri))
        }
        Some("tel") => {
            let digits = to.get(4..).unwrap_or_default().split(';').next().unwrap_or_default();
            number(digits).map(Called::Number).ok_or_else(|| DialRefusal::BadTarget(format!("{to:?} is not a number")))
        }
        Some("sips") => Err(DialRefusal::BadTarget("sips: is not supported".into())),
        _ => number(to)
            .map(Called::Number)
            .ok_or_else(|| DialRefusal::BadTarget(format!("{to:?} is not a phone number, a tel: or a sip: URI"))),
    }
}

/// Decides where a call request goes, or why it may not.
pub fn route(trunks: &[Trunk], direct: &DirectDial, ask: DialAsk<'_>) -> Result<Route, DialRefusal> {
    let to = called(ask.to)?;
    let trunk = match ask.trunk {
        Some(id) => {
            let trunk = trunks.iter().find(|t| t.id == id).ok_or_else(|| DialRefusal::TrunkNotFound(id.to_owned()))?;
            if trunk.outbound.is_none() {
                return Err(DialRefusal::NotOutbound(id.to_owned()));
            }
            trunk
        }
        None => {
            if let (Called::Uri(uri), true) = (&to, direct.allowed) {
                return direct_route(direct, uri, ask.from);
            }
            let outbound: Vec<&Trunk> = trunks.iter().filter(|t| t.outbound.is_some()).collect();
            match (outbound.as_slice(), &to) {
                ([only], _) => *only,
                ([], Called::Number(number)) => return Err(DialRefusal::NoOutboundTrunk(number.clone())),
                ([], Called::Uri(_)) => return Err(DialRefusal::DirectDialDisabled),
                (_, _) => return Err(DialRefusal::TrunkRequired),
            }
        }
    };
    through_trunk(trunk, to, ask.from, ask.trunk.is_some())
}

fn direct_route(direct: &DirectDial, uri: &rsip::Uri, from: Option<&str>) -> Result<Route, DialRefusal> {
    if !direct.hosts.iter().any(|h| h.matches(uri)) {
        return Err(DialRefusal::HostNotAllowed(uri.host_with_port.to_string()));
    }
    let caller_id =
        from.map(|f| caller_id(user_of(f)).ok_or_else(|| DialRefusal::BadCallerId(f.to_owned()))).transpose()?;
    Ok(Route::Direct { target: uri.clone(), caller_id })
}

fn through_trunk(trunk: &Trunk, to: Called, from: Option<&str>, named: bool) -> Result<Route, DialRefusal> {
    let Some(outbound) = &trunk.outbound else { return Err(DialRefusal::NotOutbound(trunk.id.clone())) };
    let dialled = match to {
        Called::Number(number) => number,
        Called::Uri(uri) => {
            if !outbound.is_at(&uri) {
                if !named {
                    return Err(DialRefusal::DirectDialDisabled);
                }
                let address = outbound.address.clone();
                return Err(DialRefusal::NotOnTrunk { trunk: trunk.id.clone(), to: uri.to_string(), address });
            }
            let user = uri.user().unwrap_or_default();
            number(user).ok_or_else(|| DialRefusal::NotANumber { trunk: trunk.id.clone(), to: user.to_owned() })?
        }
    };
    if !outbound.allows_number(&dialled) {
        let allowed = outbound.destinations.join(", ");
        return Err(DialRefusal::DestinationNotAllowed { trunk: trunk.id.clone(), number: dialled, allowed });
    }
    let caller_id = match from {
        None => outbound.caller_ids.first().cloned().unwrap_or_default(),
        Some(from) => {
            let wanted = caller_id(user_of(from)).ok_or_else(|| DialRefusal::BadCallerId(from.to_owned()))?;
            if !outbound.caller_ids.contains(&wanted) {
                return Err(DialRefusal::CallerIdNotAllowed { trunk: trunk.id.clone(), from: from.to_owned() });
            }
            wanted
        }
    };
    let transport = match outbound.transport {
        Transport::Udp => "",
        Transport::Tcp => ";transport=tcp",
        Transport::Tls => ";transport=tls",
    };
    let text = format!("sip:{dialled}@{}:{}{transport}", outbound.host, outbound.port);
    let target = rsip::Uri::try_from(text.as_str()).map_err(|_| DialRefusal::BadTarget(text.clone()))?;
    Ok(Route::Trunk { trunk: Box::new(trunk.clone()), target, caller_id })
}

/// The user part of `sip:user@host` or `tel:number`, or the text itself.
fn user_of(from: &str) -> &str {
    let from = from.trim();
    match from.split_once(':') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("tel") => {
            rest.split(['@', ';']).next().unwrap_or_default()
        }
        _ => from,
    }
}

#[cfg(test)]
mod tests;
