//! The command line is an interface other tools depend on (issue 5): these flags must keep
//! existing, and a run against nothing must fail with a clear error, not hang.

use std::process::Command;
use std::time::{Duration, Instant};

fn loadtest() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kafscale-loadtest"))
}

/// A run of topic `t` against a port nothing answers on (1), with `extra` arguments.
fn run_against_nothing(extra: &[&str]) -> std::process::Output {
    loadtest()
        .args(["--bootstrap", "127.0.0.1:1", "--topic", "t"])
        .args(extra)
        .output()
        .expect("run")
}

#[test]
fn the_documented_flags_exist() {
    let out = loadtest().arg("--help").output().expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--bootstrap",
        "--topic",
        "--records",
        "--record-size",
        "--partitions",
        "--producers",
        "--acks",
        "--compression",
        "--consume",
        "--json",
        "--rate",
        "--linger-ms",
        "--batch-bytes",
        "--duration-s",
        "--consumers",
        "--plot",
        "--plot-font",
        "--catch-up",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn an_unreachable_bootstrap_fails_fast_with_a_message() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let started = Instant::now();
    let out = loadtest()
        .args([
            "--bootstrap",
            &format!("127.0.0.1:{port}"),
            "--topic",
            "t",
            "--records",
            "10",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("preparing the topic"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn bad_arguments_are_refused() {
    let out = run_against_nothing(&["--acks", "2"]);
    assert!(!out.status.success());
    let out = run_against_nothing(&["--records", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--records"));
}

#[test]
fn plot_arguments_are_checked_before_the_run() {
    // Not a .png: refused before any connection is tried.
    let out = run_against_nothing(&["--plot", "latency.svg"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--plot") && err.contains(".png"), "{err}");
    assert!(!err.contains("preparing the topic"), "{err}");
    // --plot-font means nothing without --plot.
    let out = run_against_nothing(&[
        "--plot-font",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    ]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--plot"));
}

#[test]
fn a_missing_plot_font_is_said_before_the_run() {
    // The font is checked up front (a warning naming the flag and the package), then the run
    // goes on: here it fails for want of a server, with the run's own exit status.
    let out = run_against_nothing(&[
        "--plot",
        "latency.png",
        "--plot-font",
        "/nonexistent/NoSuchFont.ttf",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for part in [
        "--plot-font",
        "fonts-dejavu-core",
        "NoSuchFont.ttf",
        "preparing the topic",
    ] {
        assert!(err.contains(part), "{part:?} not in:\n{err}");
    }
}
