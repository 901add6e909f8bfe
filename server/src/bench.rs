//! `junction bench`: the load tool is a binary of its own (tools/bench, `junction-bench`), so the
//! server does not link its dependencies. This subcommand only finds that binary — beside this
//! one first (where `cargo build` and an install put both), else on `PATH` — and replaces this
//! process with it, handing over every argument.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// The load tool's binary name.
const BENCH_BIN: &str = "junction-bench";

/// Where the load tool is: beside the running binary if it is there, else its bare name (looked
/// up on `PATH`).
fn locate() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(BENCH_BIN)))
        .filter(|beside| beside.is_file())
        .unwrap_or_else(|| PathBuf::from(BENCH_BIN))
}

/// Execs the load tool with `args`; returns only if it could not be started.
pub fn exec(args: &[OsString]) -> ExitCode {
    let tool = locate();
    let err = Command::new(&tool).args(args).exec();
    let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|d| d.display().to_string()));
    eprintln!(
        "error: `junction bench` runs the {BENCH_BIN} binary, which is neither beside this one ({}) nor on PATH ({}: {err}); \
         build it with `cargo build -p {BENCH_BIN}` (scripts/bench builds both)",
        beside.as_deref().unwrap_or("unknown directory"),
        OsStr::new(&tool).to_string_lossy(),
    );
    ExitCode::FAILURE
}
