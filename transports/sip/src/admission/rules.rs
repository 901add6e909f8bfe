//! Dial-in dispatch rules: which room an admitted call lands in, and whether it needs a PIN.
//! `direct` sends every matching call to one room; `callee` names the room after the dialled
//! user part (`sip:standup@host` -> `standup`); `caller` opens a fresh room named after the
//! caller. Rules restricted to numbers beat catch-alls, rules restricted to trunks beat
//! unrestricted ones, and PIN rules beat PIN-less ones; ties go to the older rule.

use junction_core::RoomId;
use serde::{Deserialize, Serialize};

/// Longest PIN accepted.
pub const MAX_PIN_DIGITS: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    Direct,
    Callee,
    Caller,
}

/// A rule as configured or posted to the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub kind: RuleKind,
    /// The room of a `direct` rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomId>,
    /// Prepended to the room name of `callee` and `caller` rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// Dialled numbers this rule applies to; empty: any.
    #[serde(default)]
    pub numbers: Vec<String>,
    /// Trunk ids this rule applies to; empty: any.
    #[serde(default)]
    pub trunks: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("a direct rule needs a room")]
    DirectWithoutRoom,
    #[error("only direct rules have a room; {kind:?} rules build it from prefix and number")]
    RoomNotAllowed { kind: RuleKind },
    #[error("a direct rule has no prefix")]
    PrefixNotAllowed,
    #[error("pin must be 1 to {MAX_PIN_DIGITS} digits")]
    BadPin,
    #[error("prefix {prefix:?}: {reason}")]
    BadPrefix { prefix: String, reason: String },
}

/// A rule in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub id: String,
    pub kind: RuleKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    pub numbers: Vec<String>,
    pub trunks: Vec<String>,
}

impl Rule {
    pub fn from_spec(spec: RuleSpec) -> Result<Rule, RuleError> {
        match (spec.kind, &spec.room, &spec.prefix) {
            (RuleKind::Direct, None, _) => return Err(RuleError::DirectWithoutRoom),
            (RuleKind::Direct, _, Some(_)) => return Err(RuleError::PrefixNotAllowed),
            (kind @ (RuleKind::Callee | RuleKind::Caller), Some(_), _) => {
                return Err(RuleError::RoomNotAllowed { kind });
            }
            _ => {}
        }
        if let Some(pin) = &spec.pin
            && (pin.is_empty() || pin.len() > MAX_PIN_DIGITS || !pin.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(RuleError::BadPin);
        }
        if let Some(prefix) = spec.prefix.as_deref().filter(|p| !p.is_empty()) {
            // The prefix must itself be room-name material.
            RoomId::new(prefix)
                .map_err(|err| RuleError::BadPrefix { prefix: prefix.to_owned(), reason: err.to_string() })?;
        }
        Ok(Rule {
            id: spec.id.unwrap_or_else(|| junction_core::ids::random_id("SDR_", 12)),
            kind: spec.kind,
            room: spec.room,
            prefix: spec.prefix,
            pin: spec.pin,
            numbers: spec.numbers.into_iter().map(|n| n.trim().to_owned()).collect(),
            trunks: spec.trunks,
        })
    }

    fn applies(&self, trunk: &str, called: &str) -> bool {
        (self.numbers.is_empty() || self.numbers.iter().any(|n| n == called))
            && (self.trunks.is_empty() || self.trunks.iter().any(|t| t == trunk))
    }

    /// Higher is more specific.
    fn rank(&self) -> (bool, bool, bool) {
        (!self.numbers.is_empty(), !self.trunks.is_empty(), self.pin.is_some())
    }
}

/// Where a call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub rule: String,
    pub room: RoomId,
    pub pin: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    #[error("no dispatch rule matches calls to {called:?} on trunk {trunk}")]
    NoRule { called: String, trunk: String },
    #[error("rule {rule} makes room name {name:?}, which is not a valid room name")]
    BadRoomName { rule: String, name: String },
}

/// Keeps what may go in a room name; everything else becomes `-`.
fn room_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+') { c } else { '-' })
        .collect()
}

/// Picks the rule for a call and the room it lands in.
pub fn dispatch(rules: &[Rule], trunk: &str, called: &str, caller: &str) -> Result<Destination, DispatchError> {
    let mut best: Option<&Rule> = None;
    for rule in rules.iter().filter(|r| r.applies(trunk, called)) {
        if best.is_none_or(|b| rule.rank() > b.rank()) {
            best = Some(rule);
        }
    }
    let rule = best.ok_or_else(|| DispatchError::NoRule { called: called.to_owned(), trunk: trunk.to_owned() })?;
    let prefix = rule.prefix.clone().unwrap_or_default();
    let name = match rule.kind {
        RuleKind::Direct => rule.room.as_ref().map(|r| r.to_string()).unwrap_or_default(),
        RuleKind::Callee => format!("{prefix}{}", room_safe(called)),
        RuleKind::Caller => {
            format!("{prefix}{}_{}", room_safe(caller), junction_core::ids::random_id("", 6))
        }
    };
    let room =
        RoomId::new(&name).map_err(|_| DispatchError::BadRoomName { rule: rule.id.clone(), name: name.clone() })?;
    Ok(Destination { rule: rule.id.clone(), room, pin: rule.pin.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, kind: RuleKind, room: Option<&str>, pin: Option<&str>, numbers: &[&str]) -> Rule {
        Rule::from_spec(RuleSpec {
            id: Some(id.into()),
            kind,
            room: room.map(|r| RoomId::new(r).unwrap()),
            prefix: None,
            pin: pin.map(Into::into),
            numbers: numbers.iter().map(|n| n.to_string()).collect(),
            trunks: vec![],
        })
        .unwrap()
    }

    #[test]
    fn specific_numbers_then_pins_win() {
        let rules = [
            rule("catch-all", RuleKind::Callee, None, None, &[]),
            rule("pinned", RuleKind::Direct, Some("board"), Some("1234"), &[]),
            rule("sales", RuleKind::Direct, Some("sales"), None, &["100"]),
        ];
        let to = |called| dispatch(&rules, "T", called, "alice").unwrap();
        assert_eq!(to("100").room.as_str(), "sales");
        assert_eq!(to("standup").rule, "pinned");
        assert_eq!(to("standup").pin.as_deref(), Some("1234"));
        let open = [rule("callee", RuleKind::Callee, None, None, &[])];
        assert_eq!(dispatch(&open, "T", "standup", "a").unwrap().room.as_str(), "standup");
    }

    #[test]
    fn caller_rules_open_a_room_per_call_and_trunks_restrict() {
        let mut caller = rule("c", RuleKind::Caller, None, None, &[]);
        caller.prefix = Some("call-".into());
        caller.trunks = vec!["T1".into()];
        let one = dispatch(std::slice::from_ref(&caller), "T1", "x", "+1 555").unwrap();
        assert!(one.room.as_str().starts_with("call-+1-555_"), "{}", one.room);
        assert_ne!(one.room, dispatch(std::slice::from_ref(&caller), "T1", "x", "+1 555").unwrap().room);
        assert!(matches!(dispatch(&[caller], "T2", "x", "a"), Err(DispatchError::NoRule { .. })));
        assert!(matches!(dispatch(&[], "T", "x", "a"), Err(DispatchError::NoRule { .. })));
    }

    #[test]
    fn specs_are_validated() {
        let spec = |kind, room: Option<&str>, pin: Option<&str>| RuleSpec {
            id: None,
            kind,
            room: room.map(|r| RoomId::new(r).unwrap()),
            prefix: None,
            pin: pin.map(Into::into),
            numbers: vec![],
            trunks: vec![],
        };
        assert_eq!(Rule::from_spec(spec(RuleKind::Direct, None, None)), Err(RuleError::DirectWithoutRoom));
        assert!(matches!(
            Rule::from_spec(spec(RuleKind::Callee, Some("r"), None)),
            Err(RuleError::RoomNotAllowed { .. })
        ));
        assert_eq!(Rule::from_spec(spec(RuleKind::Direct, Some("r"), Some("12a"))), Err(RuleError::BadPin));
        assert!(Rule::from_spec(spec(RuleKind::Direct, Some("r"), Some("0042"))).unwrap().id.starts_with("SDR_"));
    }
}
