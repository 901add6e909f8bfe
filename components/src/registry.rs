//! The components in force: one entry per component with its room, options, state and the
//! token that stops its task; state changes go to the engine's event stream and, while a
//! component runs, its record to the state store.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use junction_core::RoomId;
use junction_engine::{Engine, RoomEvent};
use junction_store::{Kind, Store};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Ended;
use crate::file::{self, FileOptions, Playback};
use crate::grid::Grids;
use crate::hls::{self, HlsOptions, HlsOutputs, HlsRun};
use crate::recording::{self, Recorder, RecordingOptions, Recordings};
use crate::rtsp::{self, Pull, RtspOptions};

/// Components at once, in all and per room.
const MAX_COMPONENTS: usize = 1024;
const MAX_PER_ROOM: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Starting,
    Running,
    Stopped,
    Failed,
}

/// What a component is: its type and that type's options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Spec {
    File(FileOptions),
    Rtsp(RtspOptions),
    Recording(RecordingOptions),
    Hls(HlsOptions),
}

impl Spec {
    pub const TYPES: &'static [&'static str] = &["file", "rtsp", "recording", "hls"];

    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        match self {
            Spec::File(options) => options.validate(),
            Spec::Rtsp(options) => options.validate(),
            Spec::Recording(options) => options.validate(),
            Spec::Hls(options) => options.validate(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComponentError {
    #[error("room {0} does not exist")]
    RoomNotFound(RoomId),
    #[error("{0} components at once is the limit")]
    TooMany(usize),
    #[error("no component {0} in this room")]
    NotFound(String),
}

/// A component as the API shows it (and the store keeps it).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: String,
    room: RoomId,
    #[serde(flatten)]
    spec: Spec,
    created_at_ms: u64,
    /// Where an output writes (a recording's directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<PathBuf>,
}

struct Entry {
    record: Record,
    state: State,
    reason: Option<String>,
    stop: CancellationToken,
    /// Where an output is served (an HLS playlist), shown as `url`. Not a field of [`Record`]:
    /// a flattened `file` option has that name.
    served_at: Option<String>,
}

impl Entry {
    fn view(&self) -> Value {
        let mut value = json!(self.record);
        if let Some(url) = &self.served_at {
            value["url"] = json!(url);
        }
        value["state"] = json!(self.state);
        if let Some(reason) = &self.reason {
            value["reason"] = json!(reason);
        }
        value
    }
}

struct Inner {
    engine: Engine,
    /// The room mixer and the grid bound, for the outputs.
    grids: Grids,
    store: Store,
    shutdown: CancellationToken,
    entries: Mutex<HashMap<String, Entry>>,
    scratch: PathBuf,
    /// `[recording]`: recordings go to `<dir>/<room>/<component id>/`, and are copied to S3.
    recordings: Recordings,
    /// The HLS outputs being served.
    hls: HlsOutputs,
    /// The server's public URL, for the URLs outputs are served at.
    public_url: String,
}

/// The components service (cheap to clone).
#[derive(Clone)]
pub struct Components {
    inner: Arc<Inner>,
}

/// Runs a component's source on a task of its own: a bug (a panic) in it ends that component,
/// never the process.
async fn contained(source: impl Future<Output = Result<Ended, String>> + Send + 'static) -> Result<Ended, String> {
    tokio::spawn(source).await.unwrap_or_else(|_| Err("internal error (the component's task failed)".into()))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Components {
    pub fn new(
        engine: Engine,
        grids: Grids,
        store: Store,
        shutdown: CancellationToken,
        recordings: Recordings,
        public_url: String,
    ) -> Components {
        let scratch = std::env::temp_dir().join(format!("junction-components-{}", std::process::id()));
        let entries = Mutex::new(HashMap::new());
        let hls = HlsOutputs::default();
        Components {
            inner: Arc::new(Inner { engine, grids, store, shutdown, entries, scratch, recordings, hls, public_url }),
        }
    }

    /// The HLS outputs, for the routes that serve them.
    pub(crate) fn hls(&self) -> HlsOutputs {
        self.inner.hls.clone()
    }

    /// Starts the components the store kept (a restart).
    pub async fn restore(&self) {
        let records: Vec<Record> = match self.inner.store.list(Kind::Component, None).await {
            Ok(records) => records,
            Err(err) => {
                warn!("cannot read components from the state store: {err}");
                return;
            }
        };
        for record in records {
            info!(room = %record.room, component = %record.id, "restarting a component kept in the state store");
            self.launch(record);
        }
    }

    /// Creates and starts a component; returns its view.
    pub async fn create(&self, room: RoomId, spec: Spec) -> Result<Value, ComponentError> {
        let engine = &self.inner.engine;
        if !engine.room_exists(&room) && !engine.config().auto_create_rooms {
            return Err(ComponentError::RoomNotFound(room));
        }
        {
            let entries = self.inner.entries.lock();
            if entries.len() >= MAX_COMPONENTS {
                return Err(ComponentError::TooMany(MAX_COMPONENTS));
            }
            if entries.values().filter(|e| e.record.room == room).count() >= MAX_PER_ROOM {
                return Err(ComponentError::TooMany(MAX_PER_ROOM));
            }
        }
        let id = junction_core::ids::random_id("CO_", 12);
        let path =
            matches!(spec, Spec::Recording(_)).then(|| recording::directory(&self.inner.recordings.dir, &room, &id));
        let record = Record { id, room, spec, created_at_ms: now_ms(), path };
        if let Err(err) = self.inner.store.put(Kind::Component, &record.id, record.room.as_str(), &record).await {
            warn!(component = %record.id, "cannot keep the component in the state store: {err}");
        }
        Ok(self.launch(record))
    }

    pub fn list(&self, room: &RoomId) -> Vec<Value> {
        let entries = self.inner.entries.lock();
        let mut views: Vec<(u64, Value)> = entries
            .values()
            .filter(|e| e.record.room == *room)
            .map(|e| (e.record.created_at_ms, self.live_view(e)))
            .collect();
        views.sort_by_key(|(at, _)| *at);
        views.into_iter().map(|(_, v)| v).collect()
    }

    pub fn get(&self, room: &RoomId, id: &str) -> Option<Value> {
        self.inner.entries.lock().get(id).filter(|e| e.record.room == *room).map(|e| self.live_view(e))
    }

    /// A component's view with what it is doing now: the peer an HLS output shows (`following`).
    fn live_view(&self, entry: &Entry) -> Value {
        let mut view = entry.view();
        if let Some(following) = self.inner.hls.following(&entry.record.room, &entry.record.id) {
            view["following"] = json!(following);
        }
        view
    }

    /// Stops (if it runs) and forgets a component.
    pub async fn delete(&self, room: &RoomId, id: &str) -> Result<(), ComponentError> {
        let entry = {
            let mut entries = self.inner.entries.lock();
            match entries.get(id) {
                Some(entry) if entry.record.room == *room => entries.remove(id),
                _ => None,
            }
        };
        let mut entry = entry.ok_or_else(|| ComponentError::NotFound(id.to_owned()))?;
        entry.stop.cancel();
        self.inner.hls.remove(room, id);
        if !matches!(entry.state, State::Stopped | State::Failed) {
            entry.state = State::Stopped;
            entry.reason = Some("deleted".into());
            let event = RoomEvent::ComponentFinished { room: room.clone(), component: entry.view() };
            self.inner.engine.announce_component(event);
        }
        if let Err(err) = self.inner.store.remove(Kind::Component, id).await {
            warn!(component = %id, "cannot remove the component from the state store: {err}");
        }
        Ok(())
    }

    /// Registers a component and spawns its task.
    fn launch(&self, record: Record) -> Value {
        let stop = self.inner.shutdown.child_token();
        let served_at = matches!(record.spec, Spec::Hls(_))
            .then(|| format!("{}{}", self.inner.public_url, hls::playlist_path(&record.room, &record.id)));
        let entry =
            Entry { record: record.clone(), state: State::Starting, reason: None, stop: stop.clone(), served_at };
        let view = entry.view();
        self.inner.entries.lock().insert(record.id.clone(), entry);
        let this = self.clone();
        tokio::spawn(async move {
            let id = record.id.clone();
            let scratch = this.inner.scratch.join(&id);
            let _ = tokio::fs::create_dir_all(&scratch).await;
            let outcome = match record.spec.clone() {
                Spec::File(options) => {
                    let playback = Playback {
                        engine: this.inner.engine.clone(),
                        room: record.room.clone(),
                        options,
                        scratch: scratch.clone(),
                        stop: stop.clone(),
                    };
                    contained(file::play(playback, this.when_running(&id))).await
                }
                Spec::Rtsp(options) => {
                    let pull = Pull {
                        engine: this.inner.engine.clone(),
                        room: record.room.clone(),
                        options,
                        stop: stop.clone(),
                    };
                    let states = this.clone();
                    let state_id = id.clone();
                    let state = move |running: bool, reason: Option<String>| {
                        let state = if running { State::Running } else { State::Starting };
                        states.set_state(&state_id, state, reason);
                    };
                    contained(rtsp::pull(pull, state)).await
                }
                Spec::Recording(options) => {
                    let recorder = Recorder {
                        engine: this.inner.engine.clone(),
                        grids: this.inner.grids.clone(),
                        room: record.room.clone(),
                        component: id.clone(),
                        options,
                        dir: record
                            .path
                            .clone()
                            .unwrap_or_else(|| recording::directory(&this.inner.recordings.dir, &record.room, &id)),
                        s3: this.inner.recordings.s3.clone(),
                        stop: stop.clone(),
                    };
                    contained(recording::record(recorder, this.when_running(&id))).await
                }
                Spec::Hls(options) => {
                    let run = HlsRun {
                        engine: this.inner.engine.clone(),
                        grids: this.inner.grids.clone(),
                        room: record.room.clone(),
                        component: id.clone(),
                        options,
                        outputs: this.inner.hls.clone(),
                        stop: stop.clone(),
                    };
                    contained(hls::run(run, this.when_running(&id))).await
                }
            };
            let _ = tokio::fs::remove_dir_all(&scratch).await;
            match outcome {
                Ok(Ended::Finished) => this.set_state(&id, State::Stopped, Some("finished".into())),
                Ok(Ended::Closed(reason)) => this.set_state(&id, State::Stopped, Some(reason)),
                Err(reason) => this.set_state(&id, State::Failed, Some(reason)),
            }
            // A server that is shutting down keeps its components for the next start.
            if !this.inner.shutdown.is_cancelled()
                && let Err(err) = this.inner.store.remove(Kind::Component, &id).await
            {
                warn!(component = %id, "cannot remove the component from the state store: {err}");
            }
        });
        view
    }

    /// What a component's task calls once it is in the room: the component is `running`.
    fn when_running(&self, id: &str) -> impl FnOnce() + Send + 'static {
        let (this, id) = (self.clone(), id.to_owned());
        move || this.set_state(&id, State::Running, None)
    }

    /// Moves a component to `state` and announces it (a deleted component is only announced).
    fn set_state(&self, id: &str, state: State, reason: Option<String>) {
        let announced = {
            let mut entries = self.inner.entries.lock();
            let Some(entry) = entries.get_mut(id) else { return };
            if matches!(entry.state, State::Stopped | State::Failed) {
                return;
            }
            if entry.state == state && entry.reason == reason {
                return;
            }
            let was = entry.state;
            entry.state = state;
            entry.reason = reason;
            if was == State::Starting && state == State::Starting {
                return;
            }
            (entry.record.room.clone(), entry.view())
        };
        let (room, component) = announced;
        info!(room = %room, component = %id, state = ?state, "component state");
        let event = match state {
            State::Starting => return,
            State::Running => RoomEvent::ComponentStarted { room, component },
            State::Stopped => RoomEvent::ComponentFinished { room, component },
            State::Failed => RoomEvent::ComponentFailed { room, component },
        };
        self.inner.engine.announce_component(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store keeps a component as its record, the spec's options flattened beside the
    /// record's own fields: a field of the record named like an option would swallow it and
    /// the component would not come back after a restart.
    #[test]
    fn every_kind_of_record_reads_back_from_the_store() {
        let specs = [
            json!({"type": "file", "url": "file:///srv/a.mp3", "identity": "music", "loop": true}),
            json!({"type": "rtsp", "url": "rtsp://cam/1", "identity": "cam"}),
            json!({"type": "recording", "layout": "tracks", "peer": "cam"}),
            json!({"type": "hls", "peer": "cam", "public": true, "segment_s": 2.0, "part_ms": 500, "window": 6}),
        ];
        for spec in specs {
            let spec: Spec = serde_json::from_value(spec).unwrap();
            let record = Record {
                id: "CO_x".into(),
                room: RoomId::new("lobby").unwrap(),
                spec: spec.clone(),
                created_at_ms: 1,
                path: Some(PathBuf::from("/srv/recordings/lobby/CO_x")),
            };
            let stored = serde_json::to_value(&record).unwrap();
            let back: Record = serde_json::from_value(stored.clone()).unwrap_or_else(|e| panic!("{stored}: {e}"));
            assert_eq!(back.spec, spec);
            assert_eq!(back.path, record.path);
        }
    }
}
