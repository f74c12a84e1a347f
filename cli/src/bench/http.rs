//! A minimal HTTP/1.1 client over tokio's `TcpStream` for `bench serve --url`: one streaming
//! POST per connection (`Connection: close`), chunked or length-delimited bodies, SSE
//! `data:` events timed as they arrive. Plain `http://` only.

use super::runner::RequestResult;
use anyhow::{bail, Result};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A parsed `http://host[:port][/prefix]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Url {
    /// `host:port`, for connecting.
    pub addr: String,
    /// The `Host` header.
    pub host: String,
    /// Path prefix without a trailing `/` (often empty).
    pub prefix: String,
}

pub fn parse_url(s: &str) -> Result<Url> {
    if s.starts_with("https://") {
        bail!("--url {s}: only plain http:// is supported");
    }
    let Some(rest) = s.strip_prefix("http://") else {
        bail!("--url {s}: expected http://HOST[:PORT]");
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if hostport.is_empty() {
        bail!("--url {s}: no host");
    }
    let has_port = match hostport.rfind(':') {
        Some(i) => !hostport[i..].contains(']'),
        None => false,
    };
    if has_port {
        let port = &hostport[hostport.rfind(':').unwrap_or(0) + 1..];
        if port.parse::<u16>().is_err() {
            bail!("--url {s}: bad port `{port}`");
        }
    }
    let addr = if has_port { hostport.to_string() } else { format!("{hostport}:80") };
    let mut prefix = path.trim_end_matches('/').to_string();
    // Accept a base URL that already names the OpenAI root.
    if prefix.ends_with("/v1") {
        prefix.truncate(prefix.len() - 3);
    }
    Ok(Url { addr, host: hostport.to_string(), prefix })
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Incremental `Transfer-Encoding: chunked` decoding.
#[derive(Default)]
struct Dechunk {
    raw: Vec<u8>,
    done: bool,
}

impl Dechunk {
    /// Appends raw bytes; returns the data of the complete chunks now available.
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<u8>> {
        self.raw.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut pos = 0;
        while !self.done {
            let Some(le) = find(&self.raw[pos..], b"\r\n") else { break };
            let line = String::from_utf8_lossy(&self.raw[pos..pos + le]).to_string();
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16).map_err(|_| anyhow::anyhow!("bad chunk size line `{line}`"))?;
            let start = pos + le + 2;
            if size == 0 {
                self.done = true;
                pos = self.raw.len();
                break;
            }
            if self.raw.len() < start + size + 2 {
                break;
            }
            out.extend_from_slice(&self.raw[start..start + size]);
            pos = start + size + 2;
        }
        self.raw.drain(..pos);
        Ok(out)
    }
}

/// The OpenAI streaming completion body for a token-id prompt.
pub fn completion_body(model: Option<&str>, prompt: &[u32], max_tokens: usize) -> String {
    let mut v = serde_json::json!({
        "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true,
        "stream": true, "stream_options": {"include_usage": true},
    });
    if let Some(m) = model {
        v["model"] = Value::String(m.to_string());
    }
    v.to_string()
}

/// One streaming `/v1/completions` request, timed. Never fails: problems land in `error`.
pub async fn stream_completion(url: &Url, api_key: Option<&str>, body: String, prompt_tokens: usize, timeout: Duration) -> RequestResult {
    let t0 = Instant::now();
    let mut r = RequestResult { prompt_tokens, ..Default::default() };
    match tokio::time::timeout(timeout, exchange(url, api_key, &body, t0, &mut r)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => r.error = Some(format!("{e:#}")),
        Err(_) => r.error = Some(format!("timed out after {} s", timeout.as_secs())),
    }
    r.latency = t0.elapsed();
    r
}

async fn exchange(url: &Url, api_key: Option<&str>, body: &str, t0: Instant, r: &mut RequestResult) -> Result<()> {
    let mut s = TcpStream::connect(&url.addr).await.map_err(|e| anyhow::anyhow!("cannot connect to {}: {e}", url.addr))?;
    let _ = s.set_nodelay(true);
    let auth = api_key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    let head = format!(
        "POST {}/v1/completions HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: text/event-stream\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n",
        url.prefix,
        url.host,
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    let mut buf = vec![0u8; 16384];
    let mut raw = Vec::new();
    let end = loop {
        if let Some(e) = find(&raw, b"\r\n\r\n") {
            break e;
        }
        let n = s.read(&mut buf).await?;
        if n == 0 {
            bail!("the server closed the connection before answering");
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let length: Option<usize> = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok());
    let mut dechunk = chunked.then(Dechunk::default);
    let mut body: Vec<u8> = Vec::new();
    let mut received = 0usize;
    let mut pending = raw[end + 4..].to_vec();
    let mut last_token: Option<Instant> = None;
    let mut chunks = 0usize;
    let mut usage_tokens: Option<usize> = None;
    let mut finished = false;
    loop {
        if !pending.is_empty() {
            received += pending.len();
            match &mut dechunk {
                Some(d) => body.extend(d.push(&pending)?),
                None => body.extend_from_slice(&pending),
            }
            pending.clear();
        }
        if status == 200 {
            // SSE events: `data:` lines, events separated by a blank line.
            while let Some(p) = find(&body, b"\n\n") {
                let ev: Vec<u8> = body.drain(..p + 2).collect();
                let at = Instant::now();
                let text = String::from_utf8_lossy(&ev);
                let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data:").map(str::trim_start)).collect();
                if data.is_empty() {
                    continue;
                }
                let data = data.join("\n");
                if data.trim() == "[DONE]" {
                    finished = true;
                    continue;
                }
                let v: Value = serde_json::from_str(&data).map_err(|e| anyhow::anyhow!("bad stream event `{data}`: {e}"))?;
                if let Some(e) = v.get("error") {
                    bail!("server error: {}", e.get("message").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| e.to_string()));
                }
                if let Some(n) = v.pointer("/usage/completion_tokens").and_then(Value::as_u64) {
                    usage_tokens = Some(n as usize);
                }
                for c in v["choices"].as_array().into_iter().flatten() {
                    if c["text"].as_str().is_some_and(|t| !t.is_empty()) {
                        chunks += 1;
                        if r.ttft.is_none() {
                            r.ttft = Some(at - t0);
                        }
                        if let Some(prev) = last_token {
                            r.itl.push(at - prev);
                        }
                        last_token = Some(at);
                    }
                    if c["finish_reason"].as_str() == Some("error") {
                        bail!("the server reported a generation error");
                    }
                }
            }
        }
        let complete = dechunk.as_ref().map(|d| d.done).unwrap_or(false) || length.is_some_and(|l| received >= l);
        if complete {
            break;
        }
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        pending.extend_from_slice(&buf[..n]);
    }
    if status != 200 {
        let text = String::from_utf8_lossy(&body).to_string();
        let msg = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_string).or_else(|| v.get("error").and_then(Value::as_str).map(str::to_string)))
            .unwrap_or_else(|| text.chars().take(300).collect());
        bail!("HTTP {status}: {msg}");
    }
    if !finished {
        bail!("the stream ended without [DONE]");
    }
    r.output_tokens = usage_tokens.unwrap_or(chunks);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:8000").unwrap();
        assert_eq!((u.addr.as_str(), u.prefix.as_str()), ("127.0.0.1:8000", ""));
        let u = parse_url("http://example.com/v1/").unwrap();
        assert_eq!((u.addr.as_str(), u.host.as_str(), u.prefix.as_str()), ("example.com:80", "example.com", ""));
        assert_eq!(parse_url("http://h:1/api").unwrap().prefix, "/api");
        assert!(parse_url("https://h").unwrap_err().to_string().contains("only plain http"));
        assert!(parse_url("h:80").is_err());
        assert!(parse_url("http://h:99999").is_err());
        assert!(parse_url("http://").is_err());
    }

    #[test]
    fn dechunk_across_reads() {
        let mut d = Dechunk::default();
        let mut out = d.push(b"5\r\nhel").unwrap();
        assert!(out.is_empty());
        out.extend(d.push(b"lo\r\n3;x=1\r\n wo\r\n0\r\n\r\n").unwrap());
        assert_eq!(out, b"hello wo");
        assert!(d.done);
        assert!(Dechunk::default().push(b"zz\r\n").is_err());
    }
}
