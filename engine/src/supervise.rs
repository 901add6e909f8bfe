//! Panic containment for the tasks transports and services run: a bug hit by one session ends
//! that session and nothing else, and a shared service that panics is restarted.
//!
//! - [`contain`] runs one session's future and turns a panic inside it into
//!   `Err(SessionPanic)`: logged at error level inside the caller's span (which carries `room`
//!   and `peer`) and counted as `junction_session_panics_total{transport}`. The caller then ends
//!   the session the protocol's way (RTMP close, SIP BYE, DTLS close, MoQ session error) with
//!   whatever it kept outside the future; everything the future owned (its `Endpoint` above all)
//!   has already been dropped, which releases it in the engine.
//! - [`restart`] keeps a shared service (a socket driver, a batcher, a worker) running: each time
//!   its future panics it is logged, counted as `junction_service_restarts_total{service}` and
//!   built again by the caller's factory after a short, growing pause. A future that returns
//!   normally ends the service.
//!
//! - [`limit_panic_reports`] caps what panics write to stderr: a contained panic is still a line
//!   and a backtrace from Rust's panic hook, and where network input can cause one (a library
//!   panicking on a crafted packet, contained on purpose) a flood of such packets must not become
//!   a flood of log lines.
//!
//! Neither can stop a stack overflow, which aborts the process: parsers must bound their
//! recursion before input reaches them (see `docs/security.md`).

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tracing::error;

/// A session's task panicked; the message is the panic's payload when it was a string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {transport} session's task panicked: {message}")]
pub struct SessionPanic {
    pub transport: &'static str,
    pub message: String,
}

/// Runs one session's future, containing a panic inside it.
///
/// ```
/// # async fn session() -> u32 { 7 }
/// # async fn example() {
/// use junction_engine::supervise;
/// match supervise::contain("rtmp", session()).await {
///     Ok(value) => assert_eq!(value, 7),
///     Err(panic) => eprintln!("{panic}: close the connection the protocol's way"),
/// }
/// # }
/// ```
pub async fn contain<F: Future>(transport: &'static str, session: F) -> Result<F::Output, SessionPanic> {
    match AssertUnwindSafe(session).catch_unwind().await {
        Ok(output) => Ok(output),
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            metrics::counter!("junction_session_panics_total", "transport" => transport).increment(1);
            error!(transport, panic = %message, "session task panicked; the session is ended");
            Err(SessionPanic { transport, message })
        }
    }
}

/// Runs a shared service, restarting it after each panic; returns when a run ends normally.
/// `service` names it in logs and in `junction_service_restarts_total{service}`.
pub async fn restart<F, Fut>(service: &'static str, mut run: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut pause = Duration::from_millis(10);
    loop {
        match AssertUnwindSafe(run()).catch_unwind().await {
            Ok(()) => return,
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                metrics::counter!("junction_service_restarts_total", "service" => service).increment(1);
                error!(service, panic = %message, ?pause, "service task panicked; restarting it");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Panic reports let through per window; the rest are counted and summed up once.
#[derive(Debug)]
pub struct PanicBudget {
    per_window: u32,
    window: Duration,
    started: Option<Instant>,
    reported: u32,
    suppressed: u64,
}

/// What to do with one panic's report.
#[derive(Debug, PartialEq, Eq)]
pub enum PanicReport {
    /// Print it; `suppressed` reports were swallowed since the last one printed.
    Print {
        suppressed: u64,
    },
    Suppress,
}

impl PanicBudget {
    pub fn new(per_window: u32, window: Duration) -> Self {
        Self { per_window, window, started: None, reported: 0, suppressed: 0 }
    }

    pub fn report(&mut self, now: Instant) -> PanicReport {
        if self.started.is_none_or(|started| now.saturating_duration_since(started) >= self.window) {
            self.started = Some(now);
            self.reported = 0;
        }
        if self.reported < self.per_window {
            self.reported += 1;
            PanicReport::Print { suppressed: std::mem::take(&mut self.suppressed) }
        } else {
            self.suppressed += 1;
            PanicReport::Suppress
        }
    }
}

/// Installs a panic hook that prints (through the default hook) at most `per_minute` panic
/// reports a minute; the others are counted in `junction_panic_reports_suppressed_total` and
/// their number is printed with the next report that gets through.
pub fn limit_panic_reports(per_minute: u32) {
    let budget = Mutex::new(PanicBudget::new(per_minute, Duration::from_secs(60)));
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let report =
            budget.lock().map(|mut b| b.report(Instant::now())).unwrap_or(PanicReport::Print { suppressed: 0 });
        match report {
            PanicReport::Print { suppressed } => {
                if suppressed > 0 {
                    eprintln!("({suppressed} panic reports suppressed: over {per_minute} a minute)");
                }
                print(info);
            }
            PanicReport::Suppress => metrics::counter!("junction_panic_reports_suppressed_total").increment(1),
        }
    }));
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    #[test]
    fn a_burst_of_panics_prints_a_few_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut budget = PanicBudget::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert_eq!(budget.report(t0), PanicReport::Print { suppressed: 0 });
        }
        for _ in 0..1000 {
            assert_eq!(budget.report(t0 + Duration::from_secs(1)), PanicReport::Suppress);
        }
        assert_eq!(budget.report(t0 + Duration::from_secs(61)), PanicReport::Print { suppressed: 1000 });
        assert_eq!(budget.report(t0 + Duration::from_secs(62)), PanicReport::Print { suppressed: 0 });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_panicking_session_becomes_an_error_and_a_normal_one_its_value() {
        assert_eq!(contain("test", async { 5 }).await, Ok(5));
        let failed = contain("test", async {
            if std::hint::black_box(true) {
                panic!("bad packet {}", 3);
            }
        })
        .await;
        assert_eq!(failed, Err(SessionPanic { transport: "test", message: "bad packet 3".into() }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_is_rebuilt_after_each_panic_until_it_returns() {
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        restart("test", move || {
            let run = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if run < 3 {
                    panic!("run {run}");
                }
            }
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 4);
    }
}
