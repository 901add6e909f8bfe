//! Smoke runs of `junction bench` with tiny numbers against a real server: every mode's report
//! is complete (the fields the issue names are numbers, not nulls) and its counts are
//! consistent — frames sent = received + lost, nothing received that was never sent, the
//! server's CPU read from its own /proc entry — and the server is left with no peers. These
//! check the tool, not the server's speed: no figure is compared with a target here.

use std::path::Path;
use std::sync::OnceLock;

use serde_json::Value;

use crate::support::TestServer;

/// Builds the load tool, which `junction bench` runs from beside the `junction` binary: cargo
/// builds a test's binaries (`CARGO_BIN_EXE_junction`) but not the other packages' ones, and a
/// dependency cannot ask for a binary on stable. Building it here, with the cargo and the profile
/// this test was built with, puts it exactly where the server binary looks (the same directory),
/// so these tests go through the real `junction bench` hand-over. Once per test run; a no-op
/// when it is up to date.
fn build_bench_tool() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let profile_dir = Path::new(env!("CARGO_BIN_EXE_junction")).parent().expect("the binary's directory");
        let target_dir = profile_dir.parent().expect("the target directory");
        let mut cargo = std::process::Command::new(env!("CARGO"));
        cargo.args(["build", "--quiet", "-p", "junction-bench", "--target-dir"]).arg(target_dir);
        if profile_dir.file_name().is_some_and(|name| name == "release") {
            cargo.arg("--release");
        }
        let output = cargo.output().map_err(|err| format!("cannot run cargo: {err}"))?;
        match output.status.success() && profile_dir.join("junction-bench").is_file() {
            true => Ok(()),
            false => Err(format!("cargo build -p junction-bench failed:\n{}", String::from_utf8_lossy(&output.stderr))),
        }
    });
    if let Err(err) = built {
        panic!("{err}");
    }
}

/// Runs `junction bench <args> --json` against `server`; returns the report. Nothing is pinned
/// unless `args` ask for it: the suite's other tests share these cores.
async fn bench(server: &TestServer, args: &[&str]) -> Value {
    build_bench_tool();
    let placing = args.iter().any(|a| *a == "--pin" || *a == "--server-cores");
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_junction"))
            .arg("bench")
            .args(["--url", &server.base, "--api-key", &server.api_key, "--json"])
            .args(args)
            .args(if placing { &[][..] } else { &["--pin", "off"][..] })
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("bench finished in time")
    .expect("bench ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench {args:?} failed:\n{stdout}\n{stderr}\nserver:\n{}", server.logs());
    serde_json::from_str(&stdout).unwrap_or_else(|err| panic!("bench {args:?} printed no JSON ({err}):\n{stdout}"))
}

fn number(report: &Value, pointer: &str) -> f64 {
    report.pointer(pointer).and_then(Value::as_f64).unwrap_or_else(|| panic!("{pointer} is not a number: {report:#}"))
}

/// The checks every load report passes.
fn assert_consistent(report: &Value, server: &TestServer, receivers: u64) {
    assert_eq!(report["subscribers_connected"], receivers, "{report:#}");
    assert_eq!(report["subscribers_failed"], 0, "{report:#}");
    let frames = &report["frames"];
    let (sent, received, lost) = (number(frames, "/sent"), number(frames, "/received"), number(frames, "/lost"));
    assert!(received > 0.0, "{report:#}");
    assert_eq!(sent, received + lost, "frames sent = received + lost: {frames}");
    assert_eq!(frames["unexpected"], 0, "nothing arrived that was never sent: {frames}");
    assert!(number(frames, "/published") >= received / receivers as f64, "{frames}");
    let loss = number(report, "/loss_percent");
    assert!((loss - lost * 100.0 / sent).abs() < 1e-9, "{report:#}");
    for pointer in ["/latency_ms/p50", "/latency_ms/p99", "/join_ms/p50", "/join_ms/p99"] {
        assert!(number(report, pointer) >= 0.0);
    }
    assert!(number(report, "/latency_ms/p50") <= number(report, "/latency_ms/p99"));
    assert_eq!(report["server_cpu_source"], format!("proc:{}", server.pid()), "found the server's own process");
    assert!(number(report, "/server_cpu_percent") >= 0.0);
    assert!(number(report, "/server_rss_bytes") > 1e6);
    assert!(number(report, "/packets_received") > 0.0);
    assert!(number(report, "/server_cpu_us_per_packet") >= 0.0);
}

#[tokio::test]
async fn fanout_find_max_ramps_until_a_step_is_not_clean_and_reports_the_largest_clean_one() {
    let server = TestServer::start().await;
    let ramp = |extra: &'static [&'static str]| {
        let mut args = vec![
            "fanout",
            "--find-max",
            "--subscribers",
            "1",
            "--step",
            "1",
            "--max-subscribers",
            "3",
            "--duration",
            "2s",
            "--ramp",
            "20",
            "--video",
            "360p",
            "--keyframe-interval",
            "1s",
            "--no-floor",
        ];
        args.extend_from_slice(extra);
        args
    };
    // Limits nothing on loopback reaches: every step is clean, up to --max-subscribers.
    let report = bench(&server, &ramp(&["--loss-limit", "100", "--latency-limit", "60s"])).await;
    assert_eq!(report["mode"], "fanout-find-max");
    let find = &report["find_max"];
    let steps: Vec<(u64, bool)> = find["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["subscribers"].as_u64().unwrap(), s["clean"].as_bool().unwrap()))
        .collect();
    assert_eq!(steps, [(1, true), (2, true), (3, true)], "{report:#}");
    assert_eq!(find["largest_clean"], 3);
    assert!(find["stopped"].as_str().unwrap().contains("largest count asked for"), "{report:#}");
    // The report's own figures are the largest clean run's.
    assert_consistent(&report, &server, 3);
    server.wait_for_no_peers().await;

    // A latency limit no run can meet: the first step is not clean and the ramp stops there.
    let report = bench(&server, &ramp(&["--latency-limit", "0ms"])).await;
    let find = &report["find_max"];
    assert_eq!(find["steps"].as_array().unwrap().len(), 1, "{report:#}");
    assert_eq!(find["steps"][0]["clean"], false);
    assert_eq!(find["largest_clean"], Value::Null);
    assert!(find["stopped"].as_str().unwrap().contains("p99 latency"), "{report:#}");
    assert_consistent(&report, &server, 1);
    server.wait_for_no_peers().await;
}

/// The cores every thread of `pid` may run on, as the kernel lists them (`0`, `0-1`).
fn allowed_cores(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("status")).ok())
        .filter_map(|status| {
            let line = status.lines().find(|l| l.starts_with("Cpus_allowed_list:"))?;
            Some(line.split_once(':')?.1.trim().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn a_load_run_puts_the_server_and_the_tool_on_cores_of_their_own() {
    let server = TestServer::start().await;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let report =
        bench(&server, &["--server-cores", "0", "rtmp", "--streams", "1", "--duration", "2s", "--video", "360p"]).await;
    let placement = &report["conditions"]["placement"];
    if cores < 2 {
        assert!(placement.is_null(), "one core cannot be split: {report:#}");
        return;
    }
    assert_eq!(placement["server_cores"], "0", "{report:#}");
    assert_eq!(placement["tool_cores"], if cores == 2 { "1".to_owned() } else { format!("1-{}", cores - 1) });
    assert_eq!(placement["server_moved"], true);
    let threads = allowed_cores(server.pid());
    assert!(threads.len() > 1, "the server runs several threads: {threads:?}");
    assert!(threads.iter().all(|t| t == "0"), "every server thread is on core 0: {threads:?}");
    assert_eq!(report["subscribers_connected"], 1, "the run itself went on: {report:#}");

    // Left alone when asked.
    let report =
        bench(&server, &["--pin", "off", "rtmp", "--streams", "1", "--duration", "1s", "--video", "360p"]).await;
    assert!(report["conditions"]["placement"].is_null(), "{report:#}");
}

#[tokio::test]
async fn floor_is_measured_with_send_and_sendmmsg() {
    let server = TestServer::start().await;
    let report = bench(&server, &["floor", "--packets", "2000"]).await;
    assert_eq!(report["mode"], "floor");
    assert!(number(&report, "/floor/send_us") > 0.0, "{report:#}");
    assert!(number(&report, "/floor/sendmmsg_us") > 0.0, "{report:#}");
    assert_eq!(report["floor"]["batch"], 32);
}

#[tokio::test]
async fn fanout_over_whip_and_whep_reports_consistent_counts() {
    let server = TestServer::start().await;
    let report = bench(
        &server,
        &[
            "fanout",
            "--subscribers",
            "3",
            "--duration",
            "3s",
            "--ramp",
            "20",
            "--video",
            "360p",
            "--keyframe-interval",
            "1s",
        ],
    )
    .await;
    assert_eq!(report["mode"], "fanout");
    assert_eq!(report["protocol"], "whep");
    assert_consistent(&report, &server, 3);
    // Both kinds of media arrived, each with its own latency figures.
    assert!(number(&report, "/video_latency_ms/samples") > 0.0 && number(&report, "/audio_latency_ms/samples") > 0.0);
    // The tool's own read delay is reported apart from the latency (kernel receive stamps).
    assert!(number(&report, "/tool_receive_delay_ms/samples") > 0.0, "{report:#}");
    // And the server counts its own forwarding time per kind.
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    for kind in ["audio", "video"] {
        let prefix = format!("junction_webrtc_forward_latency_seconds_count{{kind=\"{kind}\"}} ");
        let count: f64 = metrics
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix}in /metrics"))
            .trim()
            .parse()
            .unwrap();
        assert!(count > 0.0, "{kind} frames forwarded: {count}");
    }
    assert!(number(&report, "/floor/send_us") > 0.0);
    let multiple = number(&report, "/cpu_per_packet_floor_multiple");
    let expected = number(&report, "/server_cpu_us_per_packet") / number(&report, "/floor/send_us");
    assert!((multiple - expected).abs() < 1e-6, "{report:#}");
    // bytes_per_subscriber is a difference of two RSS readings: present, whatever its sign.
    number(&report, "/bytes_per_subscriber");
    server.wait_for_no_peers().await;

    // The same load pointed at explicit WHIP/WHEP endpoints, as it would be at another server:
    // `--token` for both unless `--whep-token` says otherwise. The tokens' grants differ, so a
    // token sent to the wrong endpoint would be refused.
    let token = server.token("elsewhere", "load", serde_json::json!({"publish": true, "subscribe": false})).await;
    let viewer = server.token("elsewhere", "viewer", serde_json::json!({"publish": false, "subscribe": true})).await;
    let whip = server.url("/whip/elsewhere");
    let whep = server.url("/whep/elsewhere");
    let report = bench(
        &server,
        &[
            "fanout",
            "--subscribers",
            "2",
            "--duration",
            "2s",
            "--video",
            "360p",
            "--no-floor",
            "--whip-url",
            &whip,
            "--whep-url",
            &whep,
            "--token",
            &token,
            "--whep-token",
            &viewer,
            "--settle",
            "1s",
        ],
    )
    .await;
    assert_consistent(&report, &server, 2);
    assert!(report["floor"].is_null());
    server.wait_for_no_peers().await;
}

/// The RTMP saturation search, 1 then 2 streams with limits nothing on loopback reaches: each
/// step is a whole RTMP run (its report consistent), and the audio the server transcoded for the
/// WHEP viewers is counted in the window (about 50 Opus frames per second per viewer) with its
/// delay, which the search holds to its limits.
#[tokio::test]
async fn rtmp_find_max_counts_the_transcoded_audio_of_every_step() {
    let server = TestServer::start().await;
    let args = [
        "rtmp",
        "--find-max",
        "--streams",
        "1",
        "--step",
        "1",
        "--max-streams",
        "2",
        "--duration",
        "3s",
        "--video",
        "360p",
        "--loss-limit",
        "100",
        "--latency-limit",
        "60s",
        "--transcoded-audio-limit",
        "0",
    ];
    let report = bench(&server, &args).await;
    assert_eq!(report["mode"], "rtmp-find-max");
    assert_eq!(report["publishers"], 2, "the report is the largest clean step's");
    assert_consistent(&report, &server, 2);
    let find = &report["find_max"];
    assert_eq!(find["largest_clean"], 2, "{report:#}");
    let steps = find["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{report:#}");
    for step in steps {
        assert_eq!(step["clean"], true, "{step}");
        let share = number(step, "/transcoded_audio_share");
        assert!((0.8..=1.05).contains(&share), "about 50 transcoded frames per second per viewer: {step}");
        assert!(number(step, "/transcoded_audio_delay_p99_ms") >= 0.0, "{step}");
    }
    let frames = &report["frames"];
    assert!(
        number(frames, "/unstamped_in_window") > 0.0
            && number(frames, "/unstamped") >= number(frames, "/unstamped_in_window"),
        "{frames}"
    );
    assert!(number(&report, "/unstamped_delay_ms/p99") >= 0.0, "{report:#}");
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn churn_leaves_no_peers_behind() {
    let server = TestServer::start().await;
    let report = bench(&server, &["churn", "--cycles", "2", "--concurrency", "2", "--hold", "2s"]).await;
    assert_eq!(report["mode"], "churn");
    assert_consistent(&report, &server, 4);
    let churn = &report["churn"];
    assert_eq!(churn["sessions"], 8, "{churn}");
    assert_eq!(churn["leaked_peers"], 0, "{churn}");
    assert_eq!(churn["leaked_tracks"], 0, "{churn}");
    assert_eq!(churn["leaked_rooms"], 0, "{churn}");
    assert!(number(churn, "/rss_before_bytes") > 0.0 && number(churn, "/rss_after_bytes") > 0.0);
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn sip_calls_into_a_mixed_room_report_consistent_counts() {
    let server = TestServer::start().await;
    let sip = server.service("sip").trim_start_matches("sip:").to_owned();
    let args = ["sip", "--calls", "2", "--per-room", "2", "--duration", "3s", "--sip", &sip];
    let report = bench(&server, &args).await;
    assert_eq!(report["mode"], "sip");
    assert_eq!(report["publishers"], 2);
    assert_eq!(report["subscribers_connected"], 2, "{report:#}");
    assert_eq!(report["subscribers_failed"], 0, "{report:#}");
    // Counts: the mix each call heard, by RTP sequence number.
    let frames = &report["frames"];
    let (sent, received, lost) = (number(frames, "/sent"), number(frames, "/received"), number(frames, "/lost"));
    assert!(received > 0.0, "{report:#}");
    assert_eq!(sent, received + lost, "mix packets sent = received + lost: {frames}");
    assert_eq!(frames["unexpected"], 0, "{frames}");
    let loss = number(&report, "/loss_percent");
    assert!((loss - lost * 100.0 / sent).abs() < 1e-9, "{report:#}");
    // Call set-up time, INVITE to 200 OK, for both calls.
    assert_eq!(report["join_ms"]["samples"], 2, "{report:#}");
    assert!(number(&report, "/join_ms/p50") <= number(&report, "/join_ms/p99"));
    // The server, read from its own /proc entry.
    assert_eq!(report["server_cpu_source"], format!("proc:{}", server.pid()));
    assert!(number(&report, "/server_cpu_percent") >= 0.0);
    assert!(number(&report, "/server_rss_bytes") > 1e6);
    assert!(number(&report, "/packets_received") > 0.0);
    assert!(number(&report, "/server_cpu_us_per_packet") >= 0.0);
    assert!(number(&report, "/bytes_per_subscriber").is_finite());
    // The SIP figures: every packet the callers sent is in `published`; the mix comes one packet
    // per 20 ms (not twice that: one mix per call) and carries the other caller's tone.
    let figures = &report["sip"];
    assert_eq!((figures["calls"].as_u64(), figures["rooms"].as_u64()), (Some(2), Some(1)), "{figures}");
    assert_eq!(figures["packets_sent"], frames["published"], "{report:#}");
    assert!(number(frames, "/published") > 0.0);
    let rate = number(figures, "/mix_packets_per_call_per_s");
    assert!(rate > 0.0 && rate <= 75.0, "one mix packet per 20 ms, not {rate}/s: {figures}");
    assert!(number(figures, "/audible_percent") > 50.0, "each caller hears the other's tone: {figures}");
    assert_eq!(figures["malformed_packets"], 0, "{figures}");
    assert_eq!(figures["ended_by_server"], 0, "{figures}");
    // The tool removed its trunk and dial-in rule, and every call hung up.
    let (_, trunks) = server.call(reqwest::Method::GET, "/v1/sip/trunks", None).await;
    let (_, rules) = server.call(reqwest::Method::GET, "/v1/sip/dispatch-rules", None).await;
    assert!(!trunks.to_string().contains("bench-"), "{trunks}");
    assert_eq!(rules["dispatch_rules"].as_array().map(Vec::len), Some(0), "{rules}");
    server.wait_for_no_peers().await;
}
