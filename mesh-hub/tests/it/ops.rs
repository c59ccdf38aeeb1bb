//! Operations: health, readiness and metrics over a real hub; the `mesh-hub` command with a
//! configuration file, environment variables, TLS and JSON request logs.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use mesh_hub::{Hub, HubConfig};
use serde_json::json;

use crate::hubs::{send, Rest, TestHub};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics_answer() {
    let hub = TestHub::memory().await;
    let ann = Rest::new(&hub, hub.token("ann", "ann-laptop"));
    let anon = reqwest::Client::new();
    let (s, v) = send(anon.get(format!("{}/health", hub.url))).await;
    assert_eq!((s, v), (200, json!({"status": "ok"})));
    let (s, v) = send(anon.get(format!("{}/ready", hub.url))).await;
    assert_eq!((s, v), (200, json!({"status": "ready"})));
    let resp = ann
        .req(reqwest::Method::GET, "/mesh/me")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 16);
    let again = ann
        .req(reqwest::Method::GET, "/mesh/me")
        .send()
        .await
        .unwrap();
    assert_ne!(again.headers()["x-request-id"].to_str().unwrap(), id);
    ann.post("/mesh/folders", json!({"name": "F", "id": "f1@ann"}))
        .await;
    assert_eq!(ann.get("/mesh/folders/nope/feeds/x/entries/1").await.0, 404);
    let text = anon
        .get(format!("{}/metrics", hub.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        r#"mesh_hub_requests_total{method="GET",route="/mesh/me",status="200"} 2"#,
        r#"mesh_hub_requests_total{method="POST",route="/mesh/folders",status="201"} 1"#,
        r#"route="/mesh/folders/{folder}/feeds/{feed}/entries/{entry}",status="404"} 1"#,
        r#"mesh_hub_request_duration_seconds_bucket{le="#,
        "mesh_hub_connections_open ",
        "mesh_hub_sent_bytes_total ",
        "mesh_hub_received_bytes_total ",
        "mesh_hub_entries_merged_total ",
        "mesh_hub_notification_streams_open 0",
        r#"mesh_hub_store_bytes{store="blobs"} 0"#,
    ] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }
    let sent: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("mesh_hub_sent_bytes_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(sent > 0);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_token_guards_the_metrics_and_ready_fails_when_closing() {
    let hub = TestHub::start(
        Hub::builder()
            .config(HubConfig {
                metrics_token: Some("s3cret".into()),
                ..HubConfig::default()
            })
            .build()
            .unwrap(),
    )
    .await;
    let anon = reqwest::Client::new();
    let (s, v) = send(anon.get(format!("{}/metrics", hub.url))).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("unauthorized")));
    let (s, _) = send(
        anon.get(format!("{}/metrics", hub.url))
            .bearer_auth("wrong"),
    )
    .await;
    assert_eq!(s, 401);
    let resp = anon
        .get(format!("{}/metrics", hub.url))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("mesh_hub_requests_total"));
    // A hub closing its streams for shutdown is no longer ready.
    hub.hub.close_streams();
    let (s, v) = send(anon.get(format!("{}/ready", hub.url))).await;
    assert_eq!((s, v["code"].as_str()), (503, Some("not_ready")));
    hub.stop().await;
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn admin(data: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-hub"))
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Kills the child on drop, so a failed test leaves no hub running.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_takes_a_config_file_and_env_serves_tls_and_logs_json() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    admin(&data, &["user", "add", "ann"]);
    let token = admin(&data, &["device", "add", "ann", "ann-laptop"]);
    let config = tmp.path().join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata = {:?}\nlog-format = \"json\"\ntls-cert = {:?}\ntls-key = {:?}\nmetrics-token = \"from-file\"\n",
            data.to_str().unwrap(),
            fixture("tls-cert.pem"),
            fixture("tls-key.pem"),
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh-hub"))
        .arg("--config")
        .arg(&config)
        // The environment overrides the file.
        .env("MESH_HUB_METRICS_TOKEN", "from-env")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let running = Running(child);
    let line = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).unwrap();
            line
        }),
    )
    .await
    .expect("the hub starts")
    .unwrap();
    let url = line
        .trim()
        .strip_prefix("mesh-hub listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .replace("127.0.0.1", "localhost");
    assert!(url.starts_with("https://"), "{url}");
    let ca =
        reqwest::Certificate::from_pem(&std::fs::read(fixture("tls-ca.pem")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let (s, v) = send(client.get(format!("{url}/mesh/me")).bearer_auth(&token)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["user"], "ann");
    let (s, _) = send(
        client
            .get(format!("{url}/metrics"))
            .bearer_auth("from-file"),
    )
    .await;
    assert_eq!(s, 401, "the environment overrides the file");
    let resp = client
        .get(format!("{url}/metrics"))
        .bearer_auth("from-env")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Plain HTTP on the TLS port gets nothing.
    let plain = reqwest::Client::new()
        .get(url.replace("https://", "http://") + "/health")
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    drop(running);
    let log = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    })
    .await
    .unwrap();
    assert!(
        !log.contains('\u{1b}'),
        "no colour codes off a terminal:\n{log}"
    );
    let request = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["path"] == "/mesh/me")
        .unwrap_or_else(|| panic!("no JSON request line for /mesh/me in\n{log}"));
    assert_eq!(request["user"], "ann");
    assert_eq!(request["device"], "ann-laptop");
    assert_eq!(request["status"], 200);
    assert_eq!(request["route"], "/mesh/me");
    assert_eq!(request["request_id"].as_str().map(str::len), Some(16));
}
