//! Test helpers: engines over the cached SmolLM2 (tests print `skipped: ...` and pass when
//! it is absent), in-process calls through the router, a real server on a socket, and a
//! small raw HTTP/1.1 client (chunked bodies, SSE events, early disconnects).

#![allow(dead_code)]

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use inflight_server::{AppState, Engine, ServerConfig};
use models::load::WeightFormat;
use models::LlmConfig;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

pub const MODEL: &str = "smollm2-135m-instruct";

/// The cached SmolLM2 file, if downloaded.
pub fn model_path() -> Option<String> {
    let p = models::fetch::cache_dir().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    p.exists().then(|| p.to_string_lossy().into_owned())
}

/// Returns early from a test (passing) when the model is not cached.
#[macro_export]
macro_rules! need_model {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => {
                println!("skipped: SmolLM2 not downloaded (models::fetch::cache_dir()/models/SmolLM2-135M-Instruct.Q4_1.gguf)");
                return;
            }
        }
    };
}

/// A test engine: context 256, 64 MiB of KV, the given batch/queue limits.
pub fn load_engine(weights: WeightFormat, max_batch_size: usize, max_queue_size: usize) -> Option<Arc<Engine>> {
    let path = model_path()?;
    let cfg = LlmConfig {
        weights,
        max_seq_len: Some(256),
        tokens_per_block: 16,
        kv_cache_bytes: Some(64 << 20),
        max_batch_size,
        max_queue_size,
        max_num_tokens: 512,
        ..LlmConfig::new(path)
    };
    Some(Arc::new(Engine::load(MODEL.into(), cfg).expect("load SmolLM2")))
}

/// The engine most tests share: f32 weights (every row's math is the same whatever the
/// batch, so greedy outputs do not depend on what else runs), batch 16, queue 64.
pub fn main_engine() -> Option<Arc<Engine>> {
    static E: OnceLock<Option<Arc<Engine>>> = OnceLock::new();
    E.get_or_init(|| load_engine(WeightFormat::F32, 16, 64)).clone()
}

pub fn config() -> ServerConfig {
    ServerConfig::new(MODEL)
}

/// A router over the shared engine.
pub fn main_app() -> Option<Router> {
    Some(inflight_server::router(AppState::ready(config(), main_engine()?)))
}

/// One in-process request.
pub async fn call(app: &Router, method: &str, uri: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = app.clone().oneshot(b.body(body.into()).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    (parts.status, parts.headers, bytes.to_vec())
}

pub const JSON: (&str, &str) = ("content-type", "application/json");

/// POST a JSON value with `Content-Type: application/json`.
pub async fn post(app: &Router, uri: &str, body: &Value) -> (StatusCode, Value) {
    let (s, _, b) = call(app, "POST", uri, &[JSON], body.to_string()).await;
    (s, parse(&b))
}

/// POST raw bytes with `Content-Type: application/json`.
pub async fn post_raw(app: &Router, uri: &str, body: &[u8]) -> (StatusCode, Value) {
    let (s, _, b) = call(app, "POST", uri, &[JSON], body.to_vec()).await;
    (s, parse(&b))
}

pub fn parse(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned()))
}

/// The `data:` payloads of an SSE body.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8(body.to_vec()).expect("SSE body is UTF-8");
    text.split("\n\n")
        .filter_map(|ev| {
            let data: Vec<&str> = ev.lines().filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:"))).collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// The OpenAI error message of a response.
pub fn openai_message(v: &Value) -> String {
    v["error"]["message"].as_str().unwrap_or_else(|| panic!("not an OpenAI error: {v}")).to_string()
}

/// The Triton error message of a response.
pub fn triton_message(v: &Value) -> String {
    v["error"].as_str().unwrap_or_else(|| panic!("not a Triton error: {v}")).to_string()
}

/// Serves `state` on 127.0.0.1 (any port) from a thread of its own, for the whole test run.
pub fn spawn_server(state: Arc<AppState>) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            axum::serve(l, inflight_server::router(state)).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        parse(&self.body)
    }
}

/// A raw request: `Connection: close`, `Content-Length` when there is a body.
pub fn raw_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn parse_head(head: &[u8]) -> (u16, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    (status, headers)
}

/// Sends raw bytes and reads the whole response (to EOF).
pub async fn http(addr: SocketAddr, raw: &[u8]) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(raw).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let Some(end) = find(&buf, b"\r\n\r\n") else {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no response head"));
    };
    let (status, headers) = parse_head(&buf[..end]);
    let mut body = buf[end + 4..].to_vec();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body).0;
    }
    Ok(Resp { status, headers, body })
}

/// Decodes complete chunks; returns the data and the bytes consumed, and whether the last
/// chunk was seen.
fn dechunk(raw: &[u8]) -> (Vec<u8>, usize, bool) {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let Some(le) = find(&raw[pos..], b"\r\n") else { return (out, pos, false) };
        let size_str = String::from_utf8_lossy(&raw[pos..pos + le]);
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        let start = pos + le + 2;
        if size == 0 {
            return (out, raw.len(), true);
        }
        if raw.len() < start + size + 2 {
            return (out, pos, false);
        }
        out.extend_from_slice(&raw[start..start + size]);
        pos = start + size + 2;
    }
}

/// A streaming response read event by event; dropping it closes the connection.
pub struct SseClient {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    stream: TcpStream,
    raw: Vec<u8>,
    decoded: Vec<u8>,
    chunked: bool,
    eof: bool,
}

impl SseClient {
    /// POSTs `body` to `path` and reads the response head.
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &Value) -> std::io::Result<SseClient> {
        let mut s = TcpStream::connect(addr).await?;
        let mut h = vec![JSON];
        h.extend_from_slice(headers);
        s.write_all(&raw_request("POST", path, &h, body.to_string().as_bytes())).await?;
        let mut raw = Vec::new();
        let end = loop {
            if let Some(e) = find(&raw, b"\r\n\r\n") {
                break e;
            }
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before the response head"));
            }
            raw.extend_from_slice(&buf[..n]);
        };
        let (status, headers) = parse_head(&raw[..end]);
        let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let rest = raw[end + 4..].to_vec();
        Ok(SseClient { status, headers, stream: s, raw: rest, decoded: Vec::new(), chunked, eof: false })
    }

    fn decode(&mut self) {
        if self.chunked {
            let (data, used, last) = dechunk(&self.raw);
            self.decoded.extend_from_slice(&data);
            self.raw.drain(..used);
            if last {
                self.eof = true;
            }
        } else {
            self.decoded.append(&mut self.raw);
        }
    }

    /// The next event's `data:` payload (keep-alive comments skipped); `None` at the end.
    pub async fn next(&mut self) -> Option<String> {
        loop {
            self.decode();
            while let Some(p) = find(&self.decoded, b"\n\n") {
                let ev: Vec<u8> = self.decoded.drain(..p + 2).collect();
                if let Some(d) = sse_data(&ev).into_iter().next() {
                    return Some(d);
                }
            }
            if self.eof {
                return None;
            }
            let mut buf = [0u8; 8192];
            match self.stream.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    self.decode();
                    self.eof = true;
                }
                Ok(n) => self.raw.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Every remaining event.
    pub async fn rest(&mut self) -> Vec<String> {
        let mut v = Vec::new();
        while let Some(e) = self.next().await {
            v.push(e);
        }
        v
    }
}

/// GET /metrics from an app and read one series.
pub async fn metric(app: &Router, series: &str) -> f64 {
    let (_, _, b) = call(app, "GET", "/metrics", &[], Body::empty()).await;
    let page = String::from_utf8(b).unwrap();
    inflight_server::metrics::sample(&page, series).unwrap_or_else(|| panic!("no {series} in\n{page}"))
}

/// Polls `f` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// The text of an OpenAI completion stream (all choices in order of arrival), its last
/// finish reason, and whether it ended with `[DONE]`.
pub fn completion_stream_text(events: &[String]) -> (String, Option<String>, bool) {
    let mut text = String::new();
    let mut finish = None;
    for e in events {
        if e == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(e).unwrap_or_else(|_| panic!("bad event {e}"));
        for c in v["choices"].as_array().into_iter().flatten() {
            if let Some(t) = c["text"].as_str() {
                text.push_str(t);
            }
            if let Some(t) = c["delta"]["content"].as_str() {
                text.push_str(t);
            }
            if let Some(f) = c["finish_reason"].as_str() {
                finish = Some(f.to_string());
            }
        }
    }
    (text, finish, events.last().map(|e| e == "[DONE]").unwrap_or(false))
}
