//! `inflight serve` as a process (skipped when SmolLM2 is not cached): it binds first and
//! prints a ready-to-paste curl line when the model is ready (the line is run with the real
//! `curl` when there is one); on SIGTERM new requests get 503, the request in flight
//! finishes in full, and the process exits 0 (checklist items 39, 41).

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn cached() -> bool {
    models::fetch::cache_dir().join("models/SmolLM2-135M-Instruct.Q4_1.gguf").exists()
}

/// One request over a fresh connection; returns (status, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

fn metric(port: u16, series: &str) -> Option<f64> {
    let (_, page) = http(port, "GET", "/metrics", "").ok()?;
    page.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_prints_a_curl_line_and_drains_on_sigterm() {
    if !cached() {
        println!("skipped: SmolLM2 not downloaded");
        return;
    }
    let child = Command::new(env!("CARGO_BIN_EXE_inflight"))
        .args(["serve", "--port", "0", "--device", "cpu", "--max-seq-len", "256", "--kv-cache-mb", "32", "--max-batch-size", "4"])
        .env_remove("INFLIGHT_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start inflight serve");
    let mut child = Kill(child);
    // stderr: "listening on http://127.0.0.1:PORT" (printed before the model loads).
    let (port_tx, port_rx) = mpsc::channel();
    let stderr = child.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[serve] {line}");
            if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
                let port: u16 = rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap();
                let _ = port_tx.send(port);
            }
        }
    });
    let port = port_rx.recv_timeout(Duration::from_secs(60)).expect("a listening line");
    // Bound before the model is ready: /health answers (503 while loading, then 200).
    let (s, _) = http(port, "GET", "/health", "").expect("bound before loading finished");
    assert!(s == 503 || s == 200, "{s}");
    // stdout: the URL line, then the curl line, once ready.
    let stdout = child.0.stdout.take().unwrap();
    let (line_tx, line_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });
    let curl_line = loop {
        let line = line_rx.recv_timeout(Duration::from_secs(120)).expect("a curl line when ready");
        if line.starts_with("curl ") {
            break line;
        }
    };
    assert!(curl_line.contains(&format!("http://127.0.0.1:{port}/v1/completions")), "{curl_line}");
    assert_eq!(http(port, "GET", "/health", "").unwrap().0, 200);
    if Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let out = Command::new("sh").args(["-c", &format!("{curl_line} -s")]).output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        assert!(v["choices"][0]["text"].as_str().is_some_and(|t| !t.is_empty()), "{v}");
    }

    // A request in flight, then SIGTERM.
    let inflight = std::thread::spawn(move || http(port, "POST", "/v1/completions", r#"{"prompt": "Tell me a story.", "max_tokens": 40, "temperature": 0, "ignore_eos": true}"#).unwrap());
    let t0 = Instant::now();
    while metric(port, "inflight_running_requests") != Some(1.0) {
        assert!(t0.elapsed() < Duration::from_secs(30), "the request never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let t0 = Instant::now();
    loop {
        let (s, body) = http(port, "POST", "/v1/completions", r#"{"prompt": "hi", "max_tokens": 1}"#).expect("still accepting during the drain");
        if s == 503 {
            assert!(body.contains("shutting down"), "{body}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "no 503 after SIGTERM: {s} {body}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(http(port, "GET", "/health", "").unwrap().0, 503);
    let (s, body) = inflight.join().unwrap();
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 40, "{v}");
    // Exit 0 soon after.
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            break st;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no exit after the drain");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}");
}
