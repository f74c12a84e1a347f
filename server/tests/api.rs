//! The HTTP API against SmolLM2-135M on the CPU (tests needing the model print `skipped:`
//! and pass when it is not cached; CI fetches it first): every bad-input case of the
//! reliability checklist (items 1–18, 37, 39) with its status and message, the OpenAI and
//! Triton response shapes, streaming = non-streaming for greedy requests (item 33), the
//! TensorRT-LLM quick-start request through the real `curl`, and the `openai` Python package
//! as a client.
//!
//! Wrong JSON types are 400 (not 422) everywhere.

mod common;

use axum::body::Body;
use common::*;
use inflight_server::{AppState, ServerConfig};
use models::load::WeightFormat;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::OnceLock;

const COMPLETIONS: &str = "/v1/completions";
const CHAT: &str = "/v1/chat/completions";
const GENERATE: &str = "/v2/models/ensemble/generate";
const GENERATE_STREAM: &str = "/v2/models/ensemble/generate_stream";

fn main_addr() -> Option<SocketAddr> {
    static A: OnceLock<Option<SocketAddr>> = OnceLock::new();
    *A.get_or_init(|| main_engine().map(|e| spawn_server(AppState::ready(config(), e))))
}

/// Asserts an OpenAI error: status, `param`, and a message fragment.
fn assert_openai(status: axum::http::StatusCode, v: &Value, want: u16, param: Option<&str>, fragment: &str) {
    assert_eq!(status.as_u16(), want, "{v}");
    let msg = openai_message(v);
    assert!(msg.contains(fragment), "message {msg:?} lacks {fragment:?}");
    if let Some(p) = param {
        assert_eq!(v["error"]["param"], json!(p), "{v}");
    }
    assert!(v["error"]["type"].is_string(), "{v}");
}

fn assert_triton(status: axum::http::StatusCode, v: &Value, want: u16, fragment: &str) {
    assert_eq!(status.as_u16(), want, "{v}");
    let msg = triton_message(v);
    assert!(msg.contains(fragment), "message {msg:?} lacks {fragment:?}");
}

// ---- item 39: loading ----------------------------------------------------------------

#[tokio::test]
async fn loading_answers_503_everywhere_but_liveness() {
    // No model needed: the state has none yet.
    let app = inflight_server::router(AppState::loading(config()));
    let (s, v) = post(&app, COMPLETIONS, &json!({"prompt": "hi"})).await;
    assert_openai(s, &v, 503, None, "Loading model");
    let (s, v) = post(&app, CHAT, &json!({"messages": [{"role": "user", "content": "hi"}]})).await;
    assert_openai(s, &v, 503, None, "Loading model");
    let (s, v) = post(&app, GENERATE, &json!({"text_input": "hi", "max_tokens": 2})).await;
    assert_triton(s, &v, 503, "Loading model");
    let (s, _, b) = call(&app, "GET", "/health", &[], Body::empty()).await;
    assert_eq!((s.as_u16(), parse(&b)["status"].clone()), (503, json!("loading")));
    let (s, _, _) = call(&app, "GET", "/v2/health/ready", &[], Body::empty()).await;
    assert_eq!(s, 503);
    let (s, _, _) = call(&app, "GET", "/v2/health/live", &[], Body::empty()).await;
    assert_eq!(s, 200);
    let (s, h, _) = call(&app, "GET", "/v1/models", &[], Body::empty()).await;
    assert_eq!(s, 503);
    assert_eq!(h.get("retry-after").map(|v| v.to_str().unwrap()), Some("1"));
}

#[tokio::test]
async fn health_and_metrics_when_ready() {
    let app = need_model!(main_app());
    let (s, _, b) = call(&app, "GET", "/health", &[], Body::empty()).await;
    assert_eq!((s.as_u16(), parse(&b)["status"].clone()), (200, json!("ok")));
    for p in ["/v2/health/ready", "/v2/health/live", "/v2/models/ensemble/ready"] {
        assert_eq!(call(&app, "GET", p, &[], Body::empty()).await.0, 200, "{p}");
    }
    let (s, _, b) = call(&app, "GET", "/metrics", &[], Body::empty()).await;
    assert_eq!(s, 200);
    let page = String::from_utf8(b).unwrap();
    for series in [
        "inflight_queue_depth",
        "inflight_running_requests",
        "inflight_kv_blocks_used",
        "inflight_kv_blocks_free",
        "inflight_kv_reuse_hits_total",
        "inflight_prompt_tokens_total",
        "inflight_generation_tokens_total",
        "inflight_time_to_first_token_seconds_count",
        "inflight_inter_token_latency_seconds_count",
        "inflight_model_ready",
    ] {
        assert!(inflight_server::metrics::sample(&page, series).is_some(), "{series} missing");
    }
    assert_eq!(inflight_server::metrics::sample(&page, "inflight_model_ready"), Some(1.0));
}

// ---- items 1–3: context length -----------------------------------------------------

fn ids(n: usize) -> Value {
    json!(vec![1000; n])
}

#[tokio::test]
async fn context_length_errors_give_both_numbers() {
    let app = need_model!(main_app());
    // Item 1: longer than the context (256).
    let (s, v) = post(&app, COMPLETIONS, &json!({"prompt": ids(300), "max_tokens": 1})).await;
    assert_openai(s, &v, 400, Some("prompt"), "maximum context length is 256 tokens");
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert!(openai_message(&v).contains("300"), "{v}");
    // Item 2: prompt = L is refused, prompt = L - 1 with max_tokens 1 runs.
    let (s, v) = post(&app, COMPLETIONS, &json!({"prompt": ids(256), "max_tokens": 1})).await;
    assert_openai(s, &v, 400, None, "the prompt has 256 tokens");
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    let (s, v) = post(&app, COMPLETIONS, &json!({"prompt": ids(255), "max_tokens": 1, "temperature": 0})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["usage"]["prompt_tokens"], 255);
    // Item 3: prompt + max_tokens over the context; a missing max_tokens is what is left.
    let (s, v) = post(&app, COMPLETIONS, &json!({"prompt": ids(200), "max_tokens": 100})).await;
    assert_openai(s, &v, 400, Some("max_tokens"), "the prompt has 200 tokens and max_tokens is 100 (300 in total)");
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    let (s, v) = post(&app, COMPLETIONS, &json!({"prompt": ids(253), "temperature": 0, "ignore_eos": true})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!((v["usage"]["completion_tokens"].clone(), v["choices"][0]["finish_reason"].clone()), (json!(3), json!("length")), "{v}");
    // Text prompts and chats are measured after tokenization / the template.
    let long = "hello ".repeat(400);
    let (s, v) = post(&app, CHAT, &json!({"messages": [{"role": "user", "content": long}], "max_tokens": 4})).await;
    assert_openai(s, &v, 400, None, "maximum context length is 256 tokens");
    let (s, v) = post(&app, GENERATE, &json!({"text_input": long, "max_tokens": 4})).await;
    assert_triton(s, &v, 400, "maximum context length is 256 tokens");
    let (s, v) = post(&app, GENERATE, &json!({"text_input": "hello", "max_tokens": 300})).await;
    assert_triton(s, &v, 400, "max_tokens is 300");
}

// ---- item 4: max_tokens ------------------------------------------------------------

#[tokio::test]
async fn max_tokens_must_be_a_positive_integer_below_2_pow_31() {
    let app = need_model!(main_app());
    for (bad, fragment) in [(json!(0), "must be ≥ 1"), (json!(-1), "must be ≥ 1"), (json!(2147483648u64), "2^31"), (json!(1.5), "wrong type"), (json!("5"), "wrong type"), (json!(1e20), "wrong type")] {
        let (s, v) = post(&app, COMPLETIONS, &json!({"prompt": "hi", "max_tokens": bad})).await;
        assert_openai(s, &v, 400, Some("max_tokens"), fragment);
        let (s, v) = post(&app, CHAT, &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": bad})).await;
        assert_openai(s, &v, 400, Some("max_tokens"), fragment);
        let (s, v) = post(&app, GENERATE, &json!({"text_input": "hi", "max_tokens": bad})).await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert!(triton_message(&v).contains("max_tokens"), "{v}");
    }
}

// ---- items 5, 6: empty prompts, token ids ------------------------------------------

#[tokio::test]
async fn empty_prompts_and_bad_token_ids() {
    let app = need_model!(main_app());
    for p in [json!(""), json!([]), json!([[]]), json!([""])] {
        let (s, v) = post(&app, COMPLETIONS, &json!({"prompt": p, "max_tokens": 2})).await;
        assert_openai(s, &v, 400, Some("prompt"), "empty");
    }
    let (s, v) = post(&app, COMPLETIONS, &json!({"max_tokens": 2})).await;
    assert_openai(s, &v, 400, Some("prompt"), "missing");
    let (s, v) = post(&app, CHAT, &json!({"messages": [], "max_tokens": 2})).await;
    assert_openai(s, &v, 400, Some("messages"), "empty");
    let (s, v) = post(&app, CHAT, &json!({"max_tokens": 2})).await;
    assert_openai(s, &v, 400, Some("messages"), "missing");
    let (s, v) = post(&app, GENERATE, &json!({"text_input": "", "max_tokens": 2})).await;
    assert_triton(s, &v, 400, "text_input");
    let (s, v) = post(&app, GENERATE, &json!({"max_tokens": 2})).await;
    assert_triton(s, &v, 400, "text_input");
    let vocab = main_engine().unwrap().vocab_size as i64;
    for bad in [-1, vocab, vocab + 100] {
        let (s, v) = post(&app, COMPLETIONS, &json!({"prompt": [1, 2, bad], "max_tokens": 2})).await;
        assert_openai(s, &v, 400, Some("prompt"), "outside the vocabulary");
    }
    let (s, v) = post(&app, COMPLETIONS, &json!({"prompt": [1, 2.5], "max_tokens": 2})).await;
    assert_openai(s, &v, 400, Some("prompt"), "wrong type");
}

// ---- items 7, 8: temperature, top_p, top_k, min_p ----------------------------------

#[tokio::test]
async fn temperature_and_truncation_ranges() {
    let app = need_model!(main_app());
    for t in ["-0.5", "2.5", "1e38", "-1e-3"] {
        let body = format!(r#"{{"prompt": "hi", "max_tokens": 2, "temperature": {t}}}"#);
        let (s, v) = post_raw(&app, COMPLETIONS, body.as_bytes()).await;
        assert_openai(s, &v, 400, Some("temperature"), "must be in [0, 2]");
    }
    // Non-finite values cannot even be written in JSON: overflow and NaN are malformed.
    for t in ["1e309", "-1e309", "NaN", "Infinity"] {
        let body = format!(r#"{{"prompt": "hi", "max_tokens": 2, "temperature": {t}}}"#);
        let (s, v) = post_raw(&app, COMPLETIONS, body.as_bytes()).await;
        assert_openai(s, &v, 400, None, "malformed JSON");
        let body = format!(r#"{{"text_input": "hi", "max_tokens": 2, "temperature": {t}}}"#);
        let (s, v) = post_raw(&app, GENERATE, body.as_bytes()).await;
        assert_triton(s, &v, 400, "malformed JSON");
    }
    let (s, v) = post(&app, GENERATE, &json!({"text_input": "hi", "max_tokens": 2, "temperature": -1})).await;
    assert_triton(s, &v, 400, "invalid temperature");
    for (field, bad, fragment) in [
        ("top_p", json!(0), "(0, 1]"),
        ("top_p", json!(-0.1), "[0, 1]"),
        ("top_p", json!(1.01), "[0, 1]"),
        ("top_k", json!(-2), "0 / -1 for off"),
        ("min_p", json!(1.5), "[0, 1]"),
        ("min_p", json!(-0.1), "[0, 1]"),
    ] {
        let (s, v) = post(&app, COMPLETIONS, &json!({"prompt": "hi", "max_tokens": 2, field: bad})).await;
        assert_openai(s, &v, 400, Some(field), fragment);
    }
    for (field, bad) in [("top_p", json!(1.5)), ("top_p", json!(-0.5)), ("top_k", json!(-1)), ("top_k", json!(0.5))] {
        let (s, v) = post(&app, GENERATE, &json!({"text_input": "hi", "max_tokens": 2, field: bad})).await;
        assert_triton(s, &v, 400, &format!("invalid {field}"));
    }
    // -1 and 0 both mean "off" for top_k on the OpenAI routes.
    for k in [-1, 0] {
        let (s, v) = post(&app, COMPLETIONS, &json!({"prompt": "hi", "max_tokens": 1, "top_k": k, "seed": 1})).await;
        assert_eq!(s, 200, "{v}");
    }
}

// ---- item 9: n, best_of, beam width ------------------------------------------------

#[tokio::test]
async fn n_limits_are_checked_before_anything_is_submitted() {
    let app = need_model!(main_app());
    for (n, fragment) in [(json!(0), "1..=16"), (json!(17), "1..=16"), (json!(1000000), "1..=16"), (json!(1.5), "wrong type")] {
        let (s, v) = post(&app, COMPLETIONS, &json!({"prompt": "hi", "max_tokens": 2, "n": n})).await;
        assert_openai(s, &v, 400, Some("n"), fragment);
    }
    let (s, v) = post(&app, CHAT, &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "n": 2, "temperature": 0})).await;
    assert_openai(s, &v, 400, Some("n"), "greedy");
    let (s, v) = post(&app, COMPLETIONS, &json!({"prompt": "hi", "max_tokens": 2, "n": 3, "best_of": 2})).await;
    assert_openai(s, &v, 400, Some("best_of"), "must be ≥ n = 3");
    let (s, v) = post(&app, COMPLETIONS, &json!({"prompt": ["a", "b", "c", "d", "e"], "max_tokens": 2, "n": 4})).await;
    assert_openai(s, &v, 400, Some("n"), "20 choices");
    for bw in [0, 5, 100000] {
        let (s, v) = post(&app, GENERATE, &json!({"text_input": "hi", "max_tokens": 2, "beam_width": bw})).await;
        assert_triton(s, &v, 400, "beam_width");
    }
    // n = 2 sampled with a seed: two choices, seeds seed and seed + 1, reproducible.
    let body = json!({"prompt": "Once upon a time", "max_tokens": 6, "n": 2, "seed": 5, "temperature": 1.0, "ignore_eos": true});
    let (s, a) = post(&app, COMPLETIONS, &body).await;
    assert_eq!(s, 200, "{a}");
    let (_, b) = post(&app, COMPLETIONS, &body).await;
    assert_eq!(a["choices"].as_array().unwrap().len(), 2);
    assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"]);
    assert_eq!(a["choices"][1]["text"], b["choices"][1]["text"]);
    assert_eq!(a["usage"]["completion_tokens"], 12);
}

// ---- beam search results -------------------------------------------------------------

/// A Triton beam response's texts and cumulative log-probs.
fn beams_of(v: &Value) -> (Vec<String>, Vec<f64>) {
    let texts = v["text_output"].as_array().unwrap_or_else(|| panic!("text_output is not a list: {v}")).iter().map(|t| t.as_str().unwrap().to_string()).collect();
    let cums = v["cum_log_probs"].as_array().unwrap_or_else(|| panic!("cum_log_probs is not a list: {v}")).iter().map(|c| c.as_f64().unwrap()).collect();
    (texts, cums)
}

#[tokio::test]
async fn triton_beam_search_returns_every_beam_like_tensorrt_llm() {
    let app = need_model!(main_app());
    let prompt = "The capital of France is";
    let body = json!({"text_input": prompt, "max_tokens": 6, "beam_width": 3, "exclude_input_in_output": true});
    let (s, v) = post(&app, GENERATE, &body).await;
    assert_eq!(s, 200, "{v}");
    let (texts, cums) = beams_of(&v);
    assert_eq!((texts.len(), cums.len()), (3, 3), "{v}");
    assert!(cums.iter().all(|c| c.is_finite() && *c <= 0.0), "{cums:?}");
    let distinct: std::collections::HashSet<&String> = texts.iter().collect();
    assert_eq!(distinct.len(), 3, "three different hypotheses: {texts:?}");
    assert!(v.get("output_log_probs").is_none(), "no per-token log-probs for beams: {v}");
    // Deterministic, and the prompt is in front unless excluded.
    let mut with_input = body.clone();
    with_input["exclude_input_in_output"] = json!(false);
    let (_, w) = post(&app, GENERATE, &with_input).await;
    let (wt, wc) = beams_of(&w);
    assert_eq!(wt, texts.iter().map(|t| format!("{prompt}{t}")).collect::<Vec<_>>());
    assert_eq!(wc, cums);
    // Streamed: the beams come in one last event, the same as non-streamed.
    let events = stream_events(&app, GENERATE_STREAM, &body).await;
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(beams_of(&last), (texts.clone(), cums.clone()), "{events:?}");
    // beam_width 1 stays a plain string.
    let (_, one) = post(&app, GENERATE, &json!({"text_input": prompt, "max_tokens": 6, "beam_width": 1})).await;
    assert!(one["text_output"].is_string(), "{one}");
}

#[tokio::test]
async fn openai_beam_search_returns_the_n_best_beams_as_choices() {
    let app = need_model!(main_app());
    let prompt = "The capital of France is";
    let (_, tri) = post(&app, GENERATE, &json!({"text_input": prompt, "max_tokens": 6, "beam_width": 3, "exclude_input_in_output": true})).await;
    let (beams, _) = beams_of(&tri);
    let body = json!({"prompt": prompt, "max_tokens": 6, "n": 2, "best_of": 3, "use_beam_search": true});
    let (s, v) = post(&app, COMPLETIONS, &body).await;
    assert_eq!(s, 200, "{v}");
    let choices = v["choices"].as_array().unwrap();
    let texts: Vec<&str> = choices.iter().map(|c| c["text"].as_str().unwrap()).collect();
    assert_eq!(texts, vec![beams[0].as_str(), beams[1].as_str()], "the 2 best of the same 3 beams");
    assert!(choices.iter().enumerate().all(|(i, c)| c["index"] == i && c["finish_reason"] == "length"), "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 12);
    // Two prompts: n choices each, prompt-major.
    let (s, v) = post(&app, COMPLETIONS, &json!({"prompt": [prompt, "Once upon a time"], "max_tokens": 4, "n": 2, "use_beam_search": true})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["choices"].as_array().unwrap().len(), 4);
    // Chat too.
    let chat = json!({"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 5, "n": 2, "use_beam_search": true});
    let (s, v) = post(&app, CHAT, &chat).await;
    assert_eq!(s, 200, "{v}");
    let c = v["choices"].as_array().unwrap();
    assert_eq!(c.len(), 2);
    assert_ne!(c[0]["message"]["content"], c[1]["message"]["content"]);
    // What beam search refuses.
    let bad = |extra: Value| {
        let mut b = body.clone();
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    for (extra, param, fragment) in [
        (json!({"temperature": 0.7}), "temperature", "deterministic"),
        (json!({"stream": true}), "stream", "use_beam_search"),
        (json!({"logprobs": 1}), "logprobs", "use_beam_search"),
        (json!({"best_of": 1}), "best_of", "must be in n = 2"),
        (json!({"best_of": 5}), "best_of", "1..=4"),
    ] {
        let (s, v) = post(&app, COMPLETIONS, &bad(extra.clone())).await;
        assert_openai(s, &v, 400, Some(param), fragment);
    }
    // Without use_beam_search, best_of > n is still refused.
    let (s, v) = post(&app, COMPLETIONS, &json!({"prompt": "hi", "max_tokens": 2, "n": 1, "best_of": 2})).await;
    assert_openai(s, &v, 400, Some("best_of"), "use_beam_search");
}

// ---- item 10: log-probs ------------------------------------------------------------

#[tokio::test]
async fn logprobs_limits_and_shapes() {
    let app = need_model!(main_app());
    let (s, v) = post(&app, COMPLETIONS, &json!({"prompt": "hi", "max_tokens": 2, "logprobs": 21})).await;
    assert_openai(s, &v, 400, Some("logprobs"), "0..=20");
    let (s, v) = post(&app, CHAT, &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "logprobs": true, "top_logprobs": 21})).await;
    assert_openai(s, &v, 400, Some("top_logprobs"), "0..=20");
    let (s, v) = post(&app, CHAT, &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "top_logprobs": 3})).await;
    assert_openai(s, &v, 400, Some("top_logprobs"), "needs logprobs");
    let (s, v) = post(&app, COMPLETIONS, &json!({"prompt": "The capital of France is", "max_tokens": 3, "logprobs": 2, "temperature": 0})).await;
    assert_eq!(s, 200, "{v}");
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 3, "{lp}");
    assert_eq!(lp["top_logprobs"][0].as_object().unwrap().len(), 2, "{lp}");
    assert_eq!(lp["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect::<String>(), v["choices"][0]["text"].as_str().unwrap());
    let (s, v) = post(&app, GENERATE, &json!({"text_input": "The capital of France is", "max_tokens": 3, "return_log_probs": true})).await;
    assert_eq!(s, 200, "{v}");
    let lps: Vec<f64> = v["output_log_probs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(lps.len(), 3);
    assert!((lps.iter().sum::<f64>() - v["cum_log_probs"].as_f64().unwrap()).abs() < 1e-3, "{v}");
}

// ---- item 11: penalties, logit_bias, stop ------------------------------------------

#[tokio::test]
async fn penalties_bias_and_stop_lists() {
    let app = need_model!(main_app());
    let vocab = main_engine().unwrap().vocab_size;
    let cases = [
        (json!({"presence_penalty": 2.5}), "presence_penalty", "[-2, 2]"),
        (json!({"frequency_penalty": -3}), "frequency_penalty", "[-2, 2]"),
        (json!({"repetition_penalty": 0}), "repetition_penalty", "(0, 10]"),
        (json!({"repetition_penalty": 11}), "repetition_penalty", "[0, 10]"),
        (json!({"logit_bias": {"abc": 1}}), "logit_bias", "integer token ids"),
        (json!({"logit_bias": {vocab.to_string(): 1}}), "logit_bias", "outside the vocabulary"),
        (json!({"logit_bias": {"5": 101}}), "logit_bias", "[-100, 100]"),
        (json!({"logit_bias": {"5": 1}}), "logit_bias", "not supported"),
        (json!({"logit_bias": {"5": "x"}}), "logit_bias.5", "wrong type"),
        (json!({"stop_token_ids": [1.5]}), "stop_token_ids[0]", "wrong type"),
        (json!({"stop_token_ids": [vocab]}), "stop_token_ids", "outside the vocabulary"),
        (json!({"allowed_token_ids": [-1]}), "allowed_token_ids", "outside the vocabulary"),
        (json!({"stop": [""]}), "stop", "empty"),
        (json!({"stop": ""}), "stop", "empty"),
        (json!({"stop": vec!["x"; 17]}), "stop", "at most 16"),
        (json!({"stop": "y".repeat(2000)}), "stop", "at most 1024"),
        (json!({"stop": [1]}), "stop", "wrong type"),
        (json!({"min_tokens": -1}), "min_tokens", "≥ 0"),
        (json!({"min_tokens": 5, "max_tokens": 2}), "min_tokens", "more than max_new_tokens"),
        (json!({"seed": "x"}), "seed", "wrong type"),
        (json!({"stream": "yes"}), "stream", "wrong type"),
    ];
    for (extra, param, fragment) in cases {
        let mut body = json!({"prompt": "hi", "max_tokens": 2});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, v) = post(&app, COMPLETIONS, &body).await;
        assert_openai(s, &v, 400, Some(param), fragment);
    }
    for (extra, fragment) in [
        (json!({"repetition_penalty": 0}), "repetition_penalty"),
        (json!({"stop_words": vec!["x"; 17]}), "stop_words"),
        (json!({"stop_words": [1]}), "stop_words"),
        (json!({"bad_words": {"a": 1}}), "bad_words"),
        (json!({"end_id": vocab}), "end_id"),
        (json!({"pad_id": -1}), "pad_id"),
        (json!({"random_seed": "x"}), "random_seed"),
        (json!({"return_log_probs": 1}), "return_log_probs"),
    ] {
        let mut body = json!({"text_input": "hi", "max_tokens": 2});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, v) = post(&app, GENERATE, &body).await;
        assert_triton(s, &v, 400, fragment);
    }
}

// ---- items 12, 13, 16: malformed bodies --------------------------------------------

#[tokio::test]
async fn malformed_bodies_are_400_without_echo() {
    let app = need_model!(main_app());
    for uri in [COMPLETIONS, CHAT] {
        let (s, v) = post_raw(&app, uri, br#"{"prompt": "hi", "max_tokens": "#).await;
        assert_openai(s, &v, 400, None, "malformed JSON");
        let (s, v) = post_raw(&app, uri, b"").await;
        assert_openai(s, &v, 400, None, "empty");
        let (s, v) = post_raw(&app, uri, b"[1, 2]").await;
        assert_openai(s, &v, 400, None, "expected a JSON object");
        // Wrong types: 400 naming the field, never echoing the value.
        let (s, v) = post_raw(&app, uri, br#"{"prompt": "hi", "messages": [], "temperature": "SECRET-VALUE-123"}"#).await;
        assert_openai(s, &v, 400, Some("temperature"), "wrong type");
        assert!(!v.to_string().contains("SECRET-VALUE-123"), "{v}");
        // Item 13: invalid UTF-8 and lone surrogates.
        let (s, v) = post_raw(&app, uri, b"{\"prompt\": \"caf\xe9\", \"messages\": []}").await;
        assert_openai(s, &v, 400, None, "not valid UTF-8");
        let (s, v) = post_raw(&app, uri, br#"{"prompt": "\ud800", "messages": [{"role": "user", "content": "\udfff"}]}"#).await;
        assert_openai(s, &v, 400, None, "malformed JSON: unexpected end of hex escape");
        let (s, v) = post_raw(&app, uri, br#"{"prompt": "\udfffx", "messages": []}"#).await;
        assert_openai(s, &v, 400, None, "malformed JSON");
        // Item 16: 100k levels of nesting.
        let deep = format!(r#"{{"prompt": {}1{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
        let (s, v) = post_raw(&app, uri, deep.as_bytes()).await;
        assert_openai(s, &v, 400, None, "recursion limit");
    }
    let (s, v) = post(&app, CHAT, &json!({"messages": [{"role": "wizard", "content": "hi"}]})).await;
    assert_openai(s, &v, 400, Some("messages[0].role"), "must be one of");
    let (s, v) = post(&app, CHAT, &json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})).await;
    assert_openai(s, &v, 400, Some("messages[0].content[0].type"), "only text parts");
    let (s, v) = post(&app, CHAT, &json!({"messages": "hi"})).await;
    assert_openai(s, &v, 400, Some("messages"), "wrong type");
    // Triton: the same checks, Triton's error shape.
    let (s, v) = post_raw(&app, GENERATE, br#"{"text_input": "hi""#).await;
    assert_triton(s, &v, 400, "malformed JSON");
    let (s, v) = post_raw(&app, GENERATE, b"{\"text_input\": \"\xff\xfe\"}").await;
    assert_triton(s, &v, 400, "not valid UTF-8");
    let (s, v) = post_raw(&app, GENERATE, br#"{"text_input": "\ud800"}"#).await;
    assert_triton(s, &v, 400, "malformed JSON");
    let (s, v) = post(&app, GENERATE, &json!({"text_input": 5, "max_tokens": 2})).await;
    assert_triton(s, &v, 400, "invalid text_input: wrong type");
    let deep = format!(r#"{{"text_input": {}"a"{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
    let (s, v) = post_raw(&app, GENERATE, deep.as_bytes()).await;
    assert_triton(s, &v, 400, "recursion limit");
}

#[tokio::test]
async fn content_type_is_required_on_openai_routes_only() {
    let app = need_model!(main_app());
    let body = json!({"prompt": "hi", "max_tokens": 1, "temperature": 0}).to_string();
    for headers in [vec![], vec![("content-type", "text/plain")], vec![("content-type", "application/x-www-form-urlencoded")]] {
        for uri in [COMPLETIONS, CHAT] {
            let (s, _, b) = call(&app, "POST", uri, &headers, body.clone()).await;
            assert_openai(s, &parse(&b), 415, None, "application/json");
        }
    }
    let (s, _, b) = call(&app, "POST", COMPLETIONS, &[("content-type", "Application/JSON; charset=utf-8")], body.clone()).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    // Triton takes JSON whatever the Content-Type, as Triton does.
    let tbody = json!({"text_input": "hi", "max_tokens": 1}).to_string();
    for headers in [vec![], vec![("content-type", "application/x-www-form-urlencoded")]] {
        let (s, _, b) = call(&app, "POST", GENERATE, &headers, tbody.clone()).await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    }
}

// ---- item 14: body size ------------------------------------------------------------

#[tokio::test]
async fn bodies_over_2mb_are_413_without_reading_them_whole() {
    let app = need_model!(main_app());
    let big = format!(r#"{{"prompt": "{}"}}"#, "a".repeat(3 << 20));
    let (s, v) = post_raw(&app, COMPLETIONS, big.as_bytes()).await;
    assert_openai(s, &v, 413, None, "exceeds the limit of 2097152 bytes");
    let (s, v) = post_raw(&app, GENERATE, big.as_bytes()).await;
    assert_triton(s, &v, 413, "exceeds the limit");
    // An endless body without Content-Length: the answer comes once the limit is passed.
    let chunk = axum::body::Bytes::from(vec![b' '; 64 << 10]);
    let endless = futures_util::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
    let (s, _, b) = tokio::time::timeout(std::time::Duration::from_secs(20), call(&app, "POST", COMPLETIONS, &[JSON], Body::from_stream(endless))).await.expect("413 before the end of an endless body");
    assert_openai(s, &parse(&b), 413, None, "exceeds the limit");
    // Over a socket, a declared Content-Length over the limit is refused before any body.
    let addr = need_model!(main_addr());
    let head = format!("POST {COMPLETIONS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", 50 << 20);
    let r = http(addr, head.as_bytes()).await.unwrap();
    assert_eq!(r.status, 413, "{r:?}");
}

// ---- item 15: headers --------------------------------------------------------------

#[tokio::test]
async fn headers_over_1mb_are_refused() {
    let addr = need_model!(main_addr());
    let mut raw = b"GET /health HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..1100 {
        raw.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "p".repeat(1000)).as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    // 431 or the connection closed; never a 200 with the headers buffered.
    match http(addr, &raw).await {
        Ok(r) => assert_eq!(r.status, 431, "{:?}", r.status),
        Err(e) => println!("connection closed: {e}"),
    }
    // The server still answers.
    let r = http(addr, &raw_request("GET", "/health", &[], b"")).await.unwrap();
    assert_eq!(r.status, 200);
}

// ---- item 17: unknown models -------------------------------------------------------

#[tokio::test]
async fn unknown_models_are_404() {
    let app = need_model!(main_app());
    let (s, v) = post(&app, COMPLETIONS, &json!({"model": "gpt-4", "prompt": "hi", "max_tokens": 1})).await;
    assert_openai(s, &v, 404, Some("model"), "does not exist");
    assert_eq!(v["error"]["code"], "model_not_found");
    let (s, v) = post(&app, CHAT, &json!({"model": "x".repeat(500), "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_openai(s, &v, 404, Some("model"), "does not exist");
    assert!(!openai_message(&v).contains("xxxxxxxx"), "{v}");
    for uri in ["/v2/models/llama/generate", "/v2/models/llama/generate_stream", "/v2/models/tensorrt_llm/generate"] {
        let (s, v) = post(&app, uri, &json!({"text_input": "hi", "max_tokens": 1})).await;
        assert_triton(s, &v, 404, "unknown model");
    }
    let (s, _, b) = call(&app, "GET", "/v2/models/llama", &[], Body::empty()).await;
    assert_triton(s, &parse(&b), 404, "unknown model");
    let (s, _, b) = call(&app, "GET", "/v1/nothing", &[], Body::empty()).await;
    assert_openai(s, &parse(&b), 404, None, "no such route");
    // The served name, the TensorRT-LLM names and no name at all are accepted.
    for uri in ["/v2/models/ensemble/generate", "/v2/models/tensorrt_llm_bls/generate", &format!("/v2/models/{MODEL}/generate")] {
        let (s, v) = post(&app, uri, &json!({"text_input": "hi", "max_tokens": 1})).await;
        assert_eq!(s, 200, "{uri}: {v}");
    }
    let (s, v) = post(&app, COMPLETIONS, &json!({"model": MODEL, "prompt": "hi", "max_tokens": 1})).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = post(&app, COMPLETIONS, &json!({"prompt": "hi", "max_tokens": 1})).await;
    assert_eq!(s, 200, "{v}");
    let (s, _, b) = call(&app, "GET", "/v2/models/ensemble", &[], Body::empty()).await;
    let meta = parse(&b);
    assert_eq!((s.as_u16(), meta["name"].clone(), meta["versions"].clone()), (200, json!("ensemble"), json!(["1"])));
    assert!(meta["inputs"].as_array().unwrap().iter().any(|i| i["name"] == "text_input"), "{meta}");
    assert!(meta["outputs"].as_array().unwrap().iter().any(|i| i["name"] == "text_output"), "{meta}");
    let (s, _, b) = call(&app, "GET", "/v1/models", &[], Body::empty()).await;
    assert_eq!((s.as_u16(), parse(&b)["data"][0]["id"].clone()), (200, json!(MODEL)));
}

// ---- item 18: API key --------------------------------------------------------------

const KEY: &str = "sk-test-0123456789";

fn inference_routes() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("POST", COMPLETIONS, json!({"prompt": "hi", "max_tokens": 1})),
        ("POST", CHAT, json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})),
        ("GET", "/v1/models", Value::Null),
        ("POST", GENERATE, json!({"text_input": "hi", "max_tokens": 1})),
        ("POST", GENERATE_STREAM, json!({"text_input": "hi", "max_tokens": 1})),
        ("GET", "/v2/models/ensemble", Value::Null),
        ("GET", "/metrics", Value::Null),
        ("POST", "/admin/abort_all", Value::Null),
    ]
}

#[tokio::test]
async fn api_key_guards_every_route_but_health() {
    // Its own engine: the routes include `/admin/abort_all`, which would cancel the other
    // tests' requests on the shared one.
    let engine = need_model!(load_engine(WeightFormat::Native, 4, 16));
    let state = AppState::ready(ServerConfig { api_key: Some(KEY.into()), ..config() }, engine);
    let app = inflight_server::router(state.clone());
    let good = format!("Bearer {KEY}");
    for (method, uri, body) in inference_routes() {
        let body = if body.is_null() { String::new() } else { body.to_string() };
        for auth in [None, Some("Bearer wrong"), Some("Basic c2stdGVzdA=="), Some(KEY), Some("Bearer sk-test-012345678")] {
            let mut h = vec![JSON];
            if let Some(a) = auth {
                h.push(("authorization", a));
            }
            let (s, hd, b) = call(&app, method, uri, &h, body.clone()).await;
            assert_eq!(s, 401, "{method} {uri} with {auth:?}");
            assert_eq!(hd.get("www-authenticate").unwrap(), "Bearer");
            let v = parse(&b);
            let msg = if uri.starts_with("/v2") { triton_message(&v) } else { openai_message(&v) };
            assert!(msg.contains("API key"), "{msg}");
        }
        let (s, _, b) = call(&app, method, uri, &[JSON, ("authorization", &good)], body.clone()).await;
        assert!(s.is_success(), "{method} {uri} with the key: {s} {}", String::from_utf8_lossy(&b));
    }
    for uri in ["/health", "/v2/health/ready", "/v2/health/live"] {
        let (s, _, b) = call(&app, "GET", uri, &[], Body::empty()).await;
        assert_eq!(s, 200, "{uri} stays open: {}", String::from_utf8_lossy(&b));
    }
    // Path tricks over a real socket (no client-side normalisation): never a bypass.
    let addr = spawn_server(state);
    let body = json!({"prompt": "hi", "max_tokens": 1}).to_string();
    for path in [
        "//v1/completions",
        "/v1//completions",
        "/v1%2Fcompletions",
        "/v1%2fcompletions",
        "/V1/COMPLETIONS",
        "/v1/Completions",
        "/v1/completions/",
        "/./v1/completions",
        "/health/../v1/completions",
        "/health/%2e%2e/v1/completions",
        "/health%2F..%2Fv1%2Fcompletions",
        "//health",
        "/HEALTH",
        "/health/",
        "/v2/models/ensemble/../ensemble/generate",
        "//v2/models/ensemble/generate",
        "/v2/models/ensemble%2Fgenerate",
    ] {
        let r = http(addr, &raw_request("POST", path, &[JSON], body.as_bytes())).await.unwrap();
        assert_eq!(r.status, 401, "{path}: {}", String::from_utf8_lossy(&r.body));
    }
    let r = http(addr, &raw_request("GET", "/health", &[], b"")).await.unwrap();
    assert_eq!(r.status, 200);
    let r = http(addr, &raw_request("POST", COMPLETIONS, &[JSON, ("Authorization", &good)], body.as_bytes())).await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

// ---- item 33: streaming = non-streaming --------------------------------------------

async fn stream_events(app: &axum::Router, uri: &str, body: &Value) -> Vec<String> {
    let (s, h, b) = call(app, "POST", uri, &[JSON], body.to_string()).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert!(h.get("content-type").unwrap().to_str().unwrap().starts_with("text/event-stream"));
    sse_data(&b)
}

#[tokio::test]
async fn streaming_and_non_streaming_greedy_outputs_are_identical() {
    let app = need_model!(main_app());
    // A prompt that draws multi-byte characters (every chunk is a JSON string: a split code
    // point could not even be written).
    for prompt in ["The capital of France is", "Écris une phrase en français avec des accents: é, è, à, ç, 東京 🙂"] {
        let body = json!({"prompt": prompt, "max_tokens": 16, "temperature": 0, "ignore_eos": true});
        let (s, whole) = post(&app, COMPLETIONS, &body).await;
        assert_eq!(s, 200, "{whole}");
        let mut sbody = body.clone();
        sbody["stream"] = json!(true);
        let events = stream_events(&app, COMPLETIONS, &sbody).await;
        let (text, finish, done) = completion_stream_text(&events);
        assert_eq!(text, whole["choices"][0]["text"].as_str().unwrap(), "completions: {events:?}");
        assert_eq!(finish.as_deref(), whole["choices"][0]["finish_reason"].as_str());
        assert!(done, "[DONE] last: {events:?}");
        for e in &events[..events.len() - 1] {
            let v: Value = serde_json::from_str(e).unwrap();
            assert_eq!((v["object"].clone(), v["model"].clone()), (json!("text_completion"), json!(MODEL)), "{v}");
        }

        let chat = json!({"messages": [{"role": "user", "content": prompt}], "max_tokens": 12, "temperature": 0});
        let (s, whole) = post(&app, CHAT, &chat).await;
        assert_eq!(s, 200, "{whole}");
        assert_eq!(whole["choices"][0]["message"]["role"], "assistant");
        let mut schat = chat.clone();
        schat["stream"] = json!(true);
        let events = stream_events(&app, CHAT, &schat).await;
        let (text, finish, done) = completion_stream_text(&events);
        assert_eq!(text, whole["choices"][0]["message"]["content"].as_str().unwrap(), "chat: {events:?}");
        assert_eq!(finish.as_deref(), whole["choices"][0]["finish_reason"].as_str());
        assert!(done);
        let first: Value = serde_json::from_str(&events[0]).unwrap();
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant", "{first}");
        assert_eq!(first["object"], "chat.completion.chunk");

        let tri = json!({"text_input": prompt, "max_tokens": 16, "exclude_input_in_output": true});
        let (s, whole) = post(&app, GENERATE, &tri).await;
        assert_eq!(s, 200, "{whole}");
        let events = stream_events(&app, GENERATE_STREAM, &tri).await;
        let mut text = String::new();
        for e in &events {
            let v: Value = serde_json::from_str(e).unwrap();
            assert_eq!((v["model_name"].clone(), v["model_version"].clone()), (json!("ensemble"), json!("1")), "{v}");
            text.push_str(v["text_output"].as_str().unwrap());
        }
        assert_eq!(text, whole["text_output"].as_str().unwrap(), "triton: {events:?}");
        // Without exclude_input_in_output the non-streamed text starts with the prompt.
        let (_, with_input) = post(&app, GENERATE, &json!({"text_input": prompt, "max_tokens": 16})).await;
        assert_eq!(with_input["text_output"].as_str().unwrap(), format!("{prompt}{text}"));
    }
}

#[tokio::test]
async fn stream_usage_chunk_and_stop_strings() {
    let app = need_model!(main_app());
    let body = json!({"prompt": "1, 2, 3, 4, 5,", "max_tokens": 20, "temperature": 0, "stop": [" 8"], "stream": true, "stream_options": {"include_usage": true}});
    let events = stream_events(&app, COMPLETIONS, &body).await;
    let (text, finish, done) = completion_stream_text(&events);
    assert!(done);
    assert!(!text.contains(" 8"), "{text:?}");
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]), "{usage}");
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let mut whole = body.clone();
    whole["stream"] = json!(false);
    let (_, v) = post(&app, COMPLETIONS, &whole).await;
    assert_eq!(v["choices"][0]["text"].as_str().unwrap(), text);
    assert_eq!(v["choices"][0]["finish_reason"].as_str(), finish.as_deref());
    assert_eq!(v["usage"], usage["usage"]);
}

// ---- the TensorRT-LLM quick start through curl; the openai package -----------------

fn have(cmd: &str, arg: &str) -> bool {
    std::process::Command::new(cmd).arg(arg).output().map(|o| o.status.success()).unwrap_or(false)
}

#[tokio::test]
async fn tensorrt_llm_quick_start_with_curl() {
    let addr = need_model!(main_addr());
    if !have("curl", "--version") {
        println!("skipped: no curl binary");
        return;
    }
    let url = format!("http://{addr}/v2/models/ensemble/generate");
    let data = r#"{"text_input": "What is machine learning?", "max_tokens": 20, "bad_words": "", "stop_words": ""}"#;
    // Exactly the quick start's command: `curl -X POST <url> -d '<json>'` (form content type).
    let out = tokio::task::spawn_blocking(move || std::process::Command::new("curl").args(["-s", "-X", "POST", &url, "-d", data]).output().unwrap()).await.unwrap();
    assert!(out.status.success(), "curl failed: {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!((v["model_name"].clone(), v["model_version"].clone()), (json!("ensemble"), json!("1")), "{v}");
    let text = v["text_output"].as_str().unwrap();
    assert!(text.starts_with("What is machine learning?") && text.len() > "What is machine learning?".len() + 10, "{text:?}");
    let url = format!("http://{addr}/v2/models/ensemble/generate_stream");
    let data = r#"{"text_input": "What is machine learning?", "max_tokens": 20, "bad_words": "", "stop_words": "", "stream": true}"#;
    let out = tokio::task::spawn_blocking(move || std::process::Command::new("curl").args(["-s", "-N", "-X", "POST", &url, "-d", data]).output().unwrap()).await.unwrap();
    let events = sse_data(&out.stdout);
    let streamed: String = events.iter().map(|e| serde_json::from_str::<Value>(e).unwrap()["text_output"].as_str().unwrap().to_string()).collect();
    assert_eq!(format!("What is machine learning?{streamed}"), text, "streamed vs not");
}

#[tokio::test]
async fn openai_python_client() {
    let addr = need_model!(main_addr());
    let ok = std::process::Command::new("python3").args(["-c", "import openai"]).output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        println!("skipped: the python `openai` package is not installed (python3 -m pip install openai)");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");
    let out = tokio::task::spawn_blocking(move || std::process::Command::new("python3").args([script, &format!("http://{addr}/v1"), MODEL]).output().unwrap()).await.unwrap();
    assert!(out.status.success(), "openai client failed:\nstdout: {}\nstderr: {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
