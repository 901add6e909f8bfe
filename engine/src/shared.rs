//! What every room, track and subscription of one engine shares ([`Shared`]): configuration,
//! clock, counters, the codec adapters, the token seats and the event stream. In a file of its
//! own so that rooms, tracks and the adaptation code depend on it rather than on `engine.rs`.

use std::sync::Arc;
use std::time::Instant;

use junction_core::ids::random_id;
use tokio::sync::broadcast;

use crate::adapt::registry::AdapterRegistry;
use crate::clock::Clock;
use crate::config::EngineConfig;
use crate::credential::TokenSessions;
use crate::events::{EngineEvent, RoomEvent};
use crate::stats::Counters;

/// What rooms, tracks and subscriptions share: configuration, clock, counters, transcoders and
/// the event stream.
pub(crate) struct Shared {
    pub(crate) config: EngineConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) counters: Counters,
    pub(crate) epoch: Instant,
    pub(crate) adapters: AdapterRegistry,
    pub(crate) token_sessions: TokenSessions,
    pub(crate) events: broadcast::Sender<EngineEvent>,
}

impl Shared {
    pub(crate) fn emit(&self, event: RoomEvent) {
        let record = EngineEvent { id: random_id("EV_", 12), created_at_ms: self.clock.unix_ms(), event };
        // No receivers is fine: nobody is listening for webhooks.
        let _ = self.events.send(record);
    }
}
