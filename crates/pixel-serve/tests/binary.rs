//! The `pixel-serve` binary: serves the tiny checkpoint on a free port, answers, and exits cleanly on
//! SIGTERM.

#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn binary_serves_and_stops_cleanly_on_sigterm() {
    let dir = common::checkpoint();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pixel-serve"))
        .args(["--model", &dir.path().to_string_lossy(), "--port", "0"])
        .args(["--context-tokens", "4000", "--max-tokens", "64"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            let at = l.find("address=")?;
            Some(
                l[at + "address=".len()..]
                    .split_whitespace()
                    .next()?
                    .to_owned(),
            )
        })
        .expect("the binary logs its address");
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(30)))
            .build(),
    );
    let models: serde_json::Value = agent
        .get(&format!("http://{addr}/v1/models"))
        .call()
        .expect("models")
        .body_mut()
        .read_json()
        .expect("json");
    assert_eq!(models["data"][0]["id"], pixel_serve::DEFAULT_AGENT_MODEL);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("the binary exits");
    assert!(exit.success(), "graceful exit after SIGTERM: {exit:?}");
}
