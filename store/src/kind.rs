//! The kinds of record the store keeps. Their names are part of the stored schema (SQLite's
//! `kind` column, Redis's hash names): never rename one; a new kind needs no migration.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A room created through the API, with its settings.
    Room,
    /// An RTMP/WHIP stream key's binding to a room and an identity.
    Ingress,
    SipTrunk,
    SipDispatchRule,
    /// A webhook not yet delivered, scoped by the node that queued it.
    WebhookDelivery,
    /// A room component (a file played into the room, ...), scoped by its room.
    Component,
}

impl Kind {
    pub const ALL: [Kind; 6] =
        [Kind::Room, Kind::Ingress, Kind::SipTrunk, Kind::SipDispatchRule, Kind::WebhookDelivery, Kind::Component];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Room => "room",
            Kind::Ingress => "ingress",
            Kind::SipTrunk => "sip_trunk",
            Kind::SipDispatchRule => "sip_dispatch_rule",
            Kind::WebhookDelivery => "webhook_delivery",
            Kind::Component => "component",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
