//! Server-sent events: the plumbing shared by the OpenAI and Triton streams.
//!
//! [`stream`] merges the output pieces of a request's jobs (one per choice) and turns them
//! into `data: ...` events through a [`StreamFormat`] (the API's chunk shapes). The response
//! body owns the jobs: when the client goes away the body is dropped, the jobs' guards cancel
//! their requests, and the KV blocks are free at once. A request that fails after the
//! headers were sent ends with the format's error event (never a silent truncation).

use crate::engine::Job;
use crate::state::InflightToken;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, BoxStream, SelectAll, StreamExt};
use host_runtime::executor::Output;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

/// How one API writes its stream.
pub trait StreamFormat: Send + 'static {
    /// Events before any output (e.g. OpenAI chat's role chunk).
    fn start(&mut self) -> Vec<Event> {
        Vec::new()
    }
    /// Events for one output piece of choice `index` (the last piece has `finish` set; an
    /// error finish must produce a terminal error event).
    fn output(&mut self, index: usize, out: &Output) -> Vec<Event>;
    /// Events after every choice finished (e.g. `[DONE]`).
    fn end(&mut self) -> Vec<Event> {
        Vec::new()
    }
}

/// An event carrying `data: <json>`.
pub fn json_event(v: &serde_json::Value) -> Event {
    Event::default().data(v.to_string())
}

/// One job's pieces tagged with its choice index.
fn job_stream(index: usize, job: Job) -> BoxStream<'static, (usize, Output)> {
    stream::unfold(job, move |mut job| async move { job.next().await.map(|o| ((index, o), job)) }).boxed()
}

struct State<F> {
    merged: SelectAll<BoxStream<'static, (usize, Output)>>,
    format: F,
    queue: VecDeque<Event>,
    ended: bool,
    _inflight: InflightToken,
}

/// The SSE response for `jobs` (choice `i` is `jobs[i]`), written by `format`.
pub fn stream<F: StreamFormat>(jobs: Vec<Job>, mut format: F, inflight: InflightToken) -> Response {
    let merged = stream::select_all(jobs.into_iter().enumerate().map(|(i, j)| job_stream(i, j)));
    let queue: VecDeque<Event> = format.start().into();
    let state = State { merged, format, queue, ended: false, _inflight: inflight };
    let events = stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.queue.pop_front() {
                return Some((Ok::<Event, Infallible>(ev), st));
            }
            if st.ended {
                return None;
            }
            match st.merged.next().await {
                Some((i, out)) => {
                    let evs = st.format.output(i, &out);
                    st.queue.extend(evs);
                }
                None => {
                    st.ended = true;
                    let evs = st.format.end();
                    st.queue.extend(evs);
                }
            }
        }
    });
    let mut resp = Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response();
    resp.headers_mut().insert("x-accel-buffering", axum::http::HeaderValue::from_static("no"));
    resp
}
