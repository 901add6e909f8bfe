//! The saturation search behind `fanout --find-max` and `rtmp --find-max`: runs of growing size,
//! each with fresh rooms and its own window, until one is not clean; the largest clean run's
//! report, with every step listed. With the server pinned to one core (as `scripts/bench` starts
//! it), the largest clean count is what one server core carries, measured rather than
//! extrapolated from a light load.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;

use super::report::{FindMaxFigures, FindMaxStep, Report};

/// Where a search starts, how it grows, where it gives up, and what a clean step stays under.
#[derive(Debug, Clone, Copy)]
pub struct Search {
    pub start: usize,
    pub step: usize,
    pub max: usize,
    pub loss_limit_percent: f64,
    pub latency_limit: Duration,
    /// Between steps: the last run's rooms were deleted, and their sessions end before the
    /// next run's baseline is read.
    pub pause: Duration,
}

impl Search {
    /// A search from `start`, `step` more each time up to `max`, with the given limits and a
    /// second's pause between steps.
    pub fn new(start: usize, step: u64, max: usize, loss_limit_percent: f64, latency_limit: Duration) -> Self {
        let step = usize::try_from(step).unwrap_or(usize::MAX);
        Search { start, step, max, loss_limit_percent, latency_limit, pause: Duration::from_secs(1) }
    }
}

/// Runs `run_step(count)` for `count` = `start`, `start + step`, ... up to `max`. A step is clean
/// when every receiver connected, loss stays under the limit, the p99 latency under its limit, and
/// `judge` finds nothing wrong (it returns why a step is not clean, for checks of its own mode).
/// `unit` names what is counted ("subscribers", "streams") in the reason the search stopped.
pub async fn search<F, Fut>(
    search: Search,
    unit: &str,
    mut run_step: F,
    judge: impl Fn(&Report) -> Option<String>,
) -> anyhow::Result<Report>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<Report>>,
{
    let latency_limit_ms = search.latency_limit.as_secs_f64() * 1000.0;
    let mut figures = FindMaxFigures {
        loss_limit_percent: search.loss_limit_percent,
        latency_limit_ms,
        largest_clean: None,
        stopped: String::new(),
        steps: Vec::new(),
    };
    // The largest clean run's report, or the first run's when it was not clean.
    let mut chosen: Option<Report> = None;
    let mut count = search.start.max(1);
    loop {
        let report = run_step(count).await?;
        let p99 = report.latency_ms.p99;
        let connected = report.subscribers_connected == count;
        let failed = if !connected {
            Some(format!("{} of {count} {unit} connected", report.subscribers_connected))
        } else if report.loss_percent >= search.loss_limit_percent {
            Some(format!("{:.3} % lost at {count}", report.loss_percent))
        } else if !p99.is_some_and(|p| p < latency_limit_ms) {
            Some(format!("p99 latency {} ms at {count}", p99.map_or_else(|| "-".to_owned(), |p| format!("{p:.1}"))))
        } else {
            judge(&report).map(|why| format!("{why} at {count}"))
        };
        figures.steps.push(FindMaxStep {
            subscribers: count,
            connected: report.subscribers_connected,
            loss_percent: report.loss_percent,
            latency_p99_ms: p99,
            server_cpu_percent: report.server_cpu_percent,
            client_cpu_percent: report.conditions.client_cpu_percent,
            tool_receive_delay_p99_ms: report.tool_receive_delay_ms.p99,
            transcoded_audio_share: report.settings.get("transcoded_audio_share").and_then(|v| v.as_f64()),
            transcoded_audio_delay_p99_ms: report.unstamped_delay_ms.p99,
            clean: failed.is_none(),
        });
        if let Some(why) = failed {
            figures.stopped = why;
            chosen.get_or_insert(report);
            break;
        }
        figures.largest_clean = Some(count);
        chosen = Some(report);
        let next = count.saturating_add(search.step.max(1));
        if next > search.max {
            figures.stopped = format!("clean up to the largest count asked for ({})", search.max);
            break;
        }
        count = next;
        tokio::time::sleep(search.pause).await;
    }
    let mut report = chosen.context("the search ran no step")?;
    if figures.steps.len() > 1 {
        report.notes.push(
            "memory per receiver after the first step reads low: the server's allocator keeps what earlier steps freed, \
             so the baseline already holds it; take that figure from a run on a fresh server"
                .to_owned(),
        );
    }
    report.find_max = Some(figures);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{FrameCounts, Percentiles};

    /// A step's report as a server that carries `capacity` receivers cleanly would give it.
    fn report_for(count: usize, capacity: usize) -> Report {
        let mut report = Report::new("fanout", "whep");
        report.subscribers_connected = count;
        let lost = if count > capacity { 10 } else { 0 };
        report.frames = FrameCounts { sent: 1000, received: 1000 - lost, lost, ..FrameCounts::default() };
        report.latency_ms = Percentiles { p99: Some(10.0), samples: 1, ..Percentiles::default() };
        report.derive();
        report
    }

    fn limits(start: usize, step: usize, max: usize) -> Search {
        Search {
            start,
            step,
            max,
            loss_limit_percent: 0.5,
            latency_limit: Duration::from_millis(100),
            pause: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn the_search_stops_at_the_first_step_that_is_not_clean() {
        let report = search(limits(10, 10, 100), "subscribers", |n| async move { Ok(report_for(n, 35)) }, |_| None)
            .await
            .unwrap();
        let figures = report.find_max.unwrap();
        assert_eq!(figures.largest_clean, Some(30));
        assert_eq!(figures.steps.iter().map(|s| s.subscribers).collect::<Vec<_>>(), [10, 20, 30, 40]);
        assert_eq!(figures.stopped, "1.000 % lost at 40");
        assert_eq!(report.subscribers_connected, 30, "the report is the largest clean step's");
    }

    #[tokio::test]
    async fn a_mode_check_ends_the_search_and_says_why() {
        let judge = |r: &Report| (r.subscribers_connected >= 20).then(|| "audio short".to_owned());
        let report =
            search(limits(10, 10, 100), "streams", |n| async move { Ok(report_for(n, 1000)) }, judge).await.unwrap();
        let figures = report.find_max.unwrap();
        assert_eq!(figures.largest_clean, Some(10));
        assert_eq!(figures.stopped, "audio short at 20");
    }

    #[tokio::test]
    async fn no_clean_step_keeps_the_first_report_and_a_clean_ramp_stops_at_the_maximum() {
        let report =
            search(limits(10, 10, 100), "streams", |n| async move { Ok(report_for(n, 5)) }, |_| None).await.unwrap();
        assert_eq!(report.find_max.unwrap().largest_clean, None);
        assert_eq!(report.subscribers_connected, 10);

        let report =
            search(limits(10, 10, 30), "streams", |n| async move { Ok(report_for(n, 1000)) }, |_| None).await.unwrap();
        let figures = report.find_max.unwrap();
        assert_eq!(figures.largest_clean, Some(30));
        assert_eq!(figures.stopped, "clean up to the largest count asked for (30)");
    }
}
