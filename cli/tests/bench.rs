//! `inflight bench`: the dataset file's shape and statistics, clear errors for bad input,
//! and tiny `static` / `serve` runs (in process and over HTTP against an in-process server)
//! against SmolLM2 when it is cached (skipped with a message otherwise).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn inflight(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_inflight")).args(args).env_remove("INFLIGHT_API_KEY").output().expect("run inflight")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("inflight-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn model_path() -> Option<String> {
    let p = models::fetch::cache_dir().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    p.exists().then(|| p.to_string_lossy().into_owned())
}

fn mean_stdev(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    (m, (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64).sqrt())
}

#[test]
fn dataset_shape_and_statistics() {
    let f = tmp("norm.json");
    let o = inflight(&["bench", "dataset", "--num-requests", "2000", "--input-mean", "100", "--input-stdev", "10", "--output-mean", "20", "--output-stdev", "0", "--vocab-size", "500", "--seed", "7", "-o", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = read_json(&f);
    let md = &v["metadata"];
    assert_eq!(md["workload_type"], "token-norm-dist");
    for k in ["input_mean", "input_stdev", "output_mean", "output_stdev", "num_requests", "tokenize_vocabsize", "max_input_len", "max_output_len", "workload_name"] {
        assert!(!md[k].is_null(), "metadata.{k} missing: {md}");
    }
    assert_eq!(md["num_requests"], 2000);
    assert_eq!(md["tokenize_vocabsize"], 500);
    let samples = v["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2000);
    let mut inputs = Vec::new();
    for s in samples {
        let ids = s["input_ids"].as_array().unwrap();
        assert_eq!(s["input_len"].as_u64().unwrap() as usize, ids.len());
        assert!(!ids.is_empty());
        assert!(ids.iter().all(|t| t.as_u64().unwrap() < 500));
        assert_eq!(s["output_len"], 20, "stdev 0 gives fixed lengths");
        assert!(!s["task_id"].is_null());
        inputs.push(ids.len() as f64);
    }
    let (m, sd) = mean_stdev(&inputs);
    assert!((m - 100.0).abs() < 1.5, "mean {m}");
    assert!((sd - 10.0).abs() < 1.0, "stdev {sd}");
    assert_eq!(md["max_input_len"].as_u64().unwrap() as f64, inputs.iter().copied().fold(0.0, f64::max));

    // Fixed lengths both ways; lengths never below 1 with a huge stdev.
    let f2 = tmp("fixed.json");
    let o = inflight(&["bench", "dataset", "--num-requests", "50", "--input-mean", "8", "--output-mean", "3", "--input-stdev", "0", "-o", f2.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = read_json(&f2);
    assert!(v["samples"].as_array().unwrap().iter().all(|s| s["input_len"] == 8 && s["output_len"] == 3));
    let o = inflight(&["bench", "dataset", "--num-requests", "200", "--input-mean", "2", "--input-stdev", "50", "--output-mean", "1", "--output-stdev", "50", "-o", f2.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = read_json(&f2);
    assert!(v["samples"].as_array().unwrap().iter().all(|s| s["input_len"].as_u64().unwrap() >= 1 && s["output_len"].as_u64().unwrap() >= 1));
}

#[test]
fn bad_input_is_a_clear_error() {
    let cases: Vec<(String, &str)> = vec![
        (r#"{"samples": [{"input_ids": [1, 2], "output_len": "x"}]}"#.into(), "samples[0].output_len must be a positive integer"),
        (r#"{"metadata": {}}"#.into(), "no \"samples\" field"),
        (r#"{"samples": []}"#.into(), "zero requests"),
        (r#"{"samples": [{"output_len": 3}]}"#.into(), "samples[0].input_ids is missing"),
        ("not json".into(), "not valid JSON"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let f = tmp(&format!("bad{i}.json"));
        std::fs::write(&f, text).unwrap();
        // --url: no model is loaded; the dataset is checked first anyway.
        let o = inflight(&["bench", "serve", "--dataset", f.to_str().unwrap(), "--url", "http://127.0.0.1:9"]);
        assert!(!o.status.success());
        let e = stderr(&o);
        assert!(e.contains(want) && e.contains(f.to_str().unwrap()), "want `{want}` in: {e}");
        assert!(!e.contains("panicked"), "{e}");
    }
    let missing = tmp("missing.json");
    for (args, want) in [
        (vec!["bench", "serve", "--dataset", missing.to_str().unwrap(), "--url", "http://127.0.0.1:9"], "cannot read the dataset"),
        (vec!["bench", "serve", "--num-requests", "0", "--url", "http://127.0.0.1:9"], "--num-requests must be at least 1"),
        (vec!["bench", "serve", "--request-rate", "-2", "--url", "http://127.0.0.1:9"], "not a request rate"),
        (vec!["bench", "serve", "--request-rate", "fast", "--url", "http://127.0.0.1:9"], "not a request rate"),
        (vec!["bench", "serve", "--url", "https://127.0.0.1:9"], "only plain http"),
        (vec!["bench", "dataset", "--num-requests", "0", "--input-mean", "4", "--output-mean", "4", "-o", "/dev/null"], "--num-requests must be at least 1"),
        (vec!["bench", "static", "--synthetic", "llama", "--batch-sizes", "1"], "unknown architecture (known: llama-3.1-8b"),
        (vec!["bench", "serve", "--synthetic", "llama"], "unknown architecture"),
        (vec!["bench", "static", "--input-output-lens", "16"], "INPUT,OUTPUT"),
        (vec!["bench", "static", "--batch-sizes", "0"], "--batch-sizes"),
        (vec!["bench", "serve", "--url", "http://127.0.0.1:9", "--num-requests", "1", "--input-len", "2", "--output-len", "1"], "all 1 requests failed: cannot connect"),
    ] {
        let o = inflight(&args);
        assert!(!o.status.success(), "{args:?}");
        let e = stderr(&o);
        assert!(e.contains(want), "{args:?}: want `{want}` in: {e}");
        assert!(!e.contains("panicked"), "{e}");
    }
}

/// The report's counts and ordered percentiles.
fn check_report(r: &Value, n: u64, out_per_req: u64, in_per_req: u64) {
    assert_eq!(r["completed"], n, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert_eq!(r["total_output_tokens"], n * out_per_req, "{r}");
    assert_eq!(r["total_input_tokens"], n * in_per_req, "{r}");
    assert!(r["duration_s"].as_f64().unwrap() > 0.0);
    assert!(r["output_throughput"].as_f64().unwrap() > 0.0);
    for m in ["ttft_ms", "tpot_ms", "itl_ms", "e2e_latency_ms"] {
        let s = &r[m];
        let (p50, p90, p99) = (s["p50"].as_f64().unwrap(), s["p90"].as_f64().unwrap(), s["p99"].as_f64().unwrap());
        assert!(s["count"].as_u64().unwrap() > 0, "{m}: {s}");
        assert!(0.0 < p50 && p50 <= p90 && p90 <= p99, "{m}: {s}");
    }
    assert!(r["ttft_ms"]["p99"].as_f64().unwrap() <= r["e2e_latency_ms"]["p99"].as_f64().unwrap() + 1e-9);
}

const ENGINE: [&str; 6] = ["--max-seq-len", "128", "--kv-cache-mb", "32", "--tokens-per-block", "16"];

#[test]
fn static_and_serve_in_process() {
    let Some(model) = model_path() else {
        println!("skipped: SmolLM2 not downloaded (models::fetch::cache_dir()/models/SmolLM2-135M-Instruct.Q4_1.gguf)");
        return;
    };
    let j = tmp("static.json");
    let mut args = vec!["bench", "static", "--model", &model, "--batch-sizes", "1,4", "--input-output-lens", "16,4", "--warmup", "0", "--runs", "1", "--json", j.to_str().unwrap()];
    args.extend(ENGINE);
    let o = inflight(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    println!("{table}");
    assert!(table.contains("tokens/s"), "{table}");
    let v = read_json(&j);
    let rs = v["results"].as_array().unwrap();
    assert_eq!(rs.len(), 2);
    for (r, b) in rs.iter().zip([1u64, 4]) {
        assert_eq!(r["batch_size"], b);
        assert_eq!(r["generated_tokens"], b * 4, "{r}");
        let (mean, max, lat) = (r["first_token_mean_ms"].as_f64().unwrap(), r["first_token_max_ms"].as_f64().unwrap(), r["latency_ms"].as_f64().unwrap());
        assert!(0.0 < mean && mean <= max + 1e-9 && max <= lat, "{r}");
        assert!(r["tokens_per_sec"].as_f64().unwrap() > 0.0);
    }

    // A dataset of 4 requests (16 in, 4 out), Poisson arrivals, concurrency 2.
    let d = tmp("serve-data.json");
    let o = inflight(&["bench", "dataset", "--num-requests", "4", "--input-mean", "16", "--output-mean", "4", "--model", &model, "-o", d.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = tmp("serve.json");
    let mut args = vec!["bench", "serve", "--model", &model, "--dataset", d.to_str().unwrap(), "--request-rate", "20", "--concurrency", "2", "--json", j.to_str().unwrap()];
    args.extend(ENGINE);
    let o = inflight(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    println!("{text}");
    assert!(text.contains("Completed requests:") && text.contains("TTFT"), "{text}");
    check_report(&read_json(&j), 4, 4, 16);
}

#[test]
fn serve_over_http() {
    let Some(model) = model_path() else {
        println!("skipped: SmolLM2 not downloaded (models::fetch::cache_dir()/models/SmolLM2-135M-Instruct.Q4_1.gguf)");
        return;
    };
    use inflight_server::{AppState, Engine, ServerConfig};
    let cfg = models::LlmConfig { max_seq_len: Some(128), tokens_per_block: 16, kv_cache_bytes: Some(32 << 20), max_batch_size: 8, ..models::LlmConfig::new(model) };
    let engine = std::sync::Arc::new(Engine::load("smollm2".into(), cfg).expect("load SmolLM2"));
    let state = AppState::ready(ServerConfig::new("smollm2"), engine);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            let _ = inflight_server::run(l, state, std::future::pending()).await;
        });
    });
    let addr = rx.recv().unwrap();
    let url = format!("http://{addr}");
    let j = tmp("http.json");
    let o = inflight(&[
        "bench", "serve", "--url", &url, "--served-model-name", "smollm2", "--num-requests", "4", "--input-len", "16", "--output-len", "4", "--vocab-size", "1000", "--json",
        j.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    println!("{text}");
    check_report(&read_json(&j), 4, 4, 16);

    // A server error (unknown model name: 404) counts as failed requests with its message.
    let o = inflight(&["bench", "serve", "--url", &url, "--served-model-name", "nope", "--num-requests", "2", "--input-len", "4", "--output-len", "2", "--vocab-size", "100"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("all 2 requests failed: HTTP 404"), "{e}");
}
