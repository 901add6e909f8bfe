//! Writes that could not reach Redis, in the order they were made, and the worker that retries
//! them with back-off (0.2 s doubling to 5 s) until Redis answers. A record written again while
//! queued keeps one place in the queue, its latest value: the earlier write would only be
//! overwritten.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use super::{Link, Op, unreachable};

const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(5);

pub(crate) struct Outbox {
    queue: Mutex<VecDeque<Op>>,
    /// Wakes the worker when a write is queued.
    queued: Notify,
    /// Tells waiters the queue is empty again.
    emptied: Notify,
}

fn key(op: &Op) -> (crate::Kind, &str) {
    match op {
        Op::Put { kind, record } => (*kind, record.id.as_str()),
        Op::Remove { kind, id } => (*kind, id.as_str()),
    }
}

impl Outbox {
    pub(crate) fn start(link: Link) -> Arc<Outbox> {
        let outbox = Arc::new(Outbox { queue: Mutex::default(), queued: Notify::new(), emptied: Notify::new() });
        tokio::spawn(outbox.clone().run(link));
        outbox
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.lock().is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.lock().len()
    }

    pub(crate) fn push(&self, op: Op) {
        let mut queue = self.queue.lock();
        match queue.iter_mut().find(|queued| key(queued) == key(&op)) {
            Some(queued) => *queued = op,
            None => queue.push_back(op),
        }
        drop(queue);
        self.queued.notify_one();
    }

    /// Returns once nothing is queued.
    pub(crate) async fn wait_empty(&self) {
        loop {
            let emptied = self.emptied.notified();
            if self.is_empty() {
                return;
            }
            emptied.await;
        }
    }

    async fn run(self: Arc<Self>, link: Link) {
        loop {
            self.queued.notified().await;
            let mut backoff = FIRST_RETRY;
            let mut applied = 0usize;
            loop {
                let Some(op) = self.queue.lock().front().cloned() else { break };
                match link.apply(&op).await {
                    Ok(()) => applied += 1,
                    Err(err) if unreachable(&err) => {
                        warn!(
                            queued = self.len(),
                            retry_in_ms = backoff.as_millis() as u64,
                            "Redis still unreachable: {err}"
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_RETRY);
                        continue;
                    }
                    // Redis answered but refused it: retrying cannot help.
                    Err(err) => error!(?op, "deferred state write refused by Redis, dropped: {err}"),
                }
                let mut queue = self.queue.lock();
                // Unless a newer write of the same record replaced it meanwhile.
                if queue.front() == Some(&op) {
                    queue.pop_front();
                }
            }
            if applied > 0 {
                info!(applied, "Redis is reachable again: deferred state writes applied");
            }
            self.emptied.notify_waiters();
        }
    }
}
