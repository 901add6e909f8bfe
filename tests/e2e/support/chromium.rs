//! Runs the Chromium scenarios of `tests/browser/`: node drives the system Chromium through
//! playwright-core (`runner.mjs` launches it headless with a fake camera and microphone); a
//! scenario takes its arguments as one JSON argument and prints its result as one JSON line,
//! `{"ok": true, ...}` or `{"ok": false, "error": ..., "logs": [...]}`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// Longest a scenario may run.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(300);

/// Scenarios with many publishing tabs (six room tabs; three with a screen share) each keep a
/// core or more busy encoding and decoding. Two at once on CI's two slower cores starved each
/// other's cameras past every deadline, so they take turns (tokio's semaphore needs no runtime:
/// every test has its own).
static MANY_TABS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Waits for the turn of a many-tab scenario; the turn lasts until the permit is dropped. Taken
/// at the start of the test, before its server and its deadlines start.
pub async fn many_tabs_turn() -> tokio::sync::SemaphorePermit<'static> {
    MANY_TABS.acquire().await.expect("the semaphore is never closed")
}

/// Runs `tests/browser/<script>` with `args` and returns its result, failing the test (with the
/// scenario's error, browser console logs and stderr) unless it reports `"ok": true`.
pub async fn run(script: &str, args: Value) -> Value {
    run_with(tokio::process::Command::new("node"), script, args).await
}

/// [`run`] inside a client network namespace: Chromium's traffic goes through its link and rules.
pub async fn run_in(net: &super::netns::ClientNet, script: &str, args: Value) -> Value {
    run_with(net.command("node"), script, args).await
}

/// [`run`] with the `node` command given (a namespace, an environment of its own).
pub async fn run_with(mut node: tokio::process::Command, script: &str, args: Value) -> Value {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `npm ci` in tests/browser (scripts/test does)"
    );
    let child = node.arg(script).arg(args.to_string()).current_dir(&dir).kill_on_drop(true).output();
    let output = tokio::time::timeout(SCENARIO_TIMEOUT, child)
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {SCENARIO_TIMEOUT:?}"))
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let result: Value = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("{script} printed no JSON result\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    assert_eq!(result["ok"], true, "{script} failed: {}\nlogs: {}\nstderr:\n{stderr}", result["error"], result["logs"]);
    result
}
