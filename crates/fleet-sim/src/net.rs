//! One shared HTTP/1.1 client for the whole fleet (pooled keep-alive connections, a bound on
//! requests in flight) and the request statistics: counts per kind and latency histograms.
//!
//! Devices share connections the way devices behind one NAT share a path: connection-level
//! behaviour is not what the migration depends on, and 10,000 private connections would cost
//! the memory budget.

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// What a request was for (request counts are kept per kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Auth = 0,
    Next = 1,
    Status = 2,
    Inventory = 3,
    Download = 4,
    Log = 5,
}

const KINDS: usize = 6;

/// An HTTP answer: status and the whole body.
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
    pub(crate) json_body: bool,
}

pub(crate) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub(crate) struct Net {
    client: Client<HttpConnector, Full<Bytes>>,
    in_flight: tokio::sync::Semaphore,
    timeout: Duration,
    pub(crate) stats: Stats,
}

impl Net {
    pub(crate) fn new(max_in_flight: usize, timeout: Duration) -> Net {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(max_in_flight)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Net {
            client,
            in_flight: tokio::sync::Semaphore::new(max_in_flight.max(1)),
            timeout,
            stats: Stats::default(),
        }
    }

    /// Sends one request; `Err` = transport failure (refused, reset, timeout, bad URL).
    /// Boxed so that a device's own future stays small while it sleeps.
    pub(crate) fn send<'a>(
        &'a self,
        kind: Kind,
        method: &'static str,
        url: &'a str,
        headers: Vec<(&'static str, String)>,
        body: Option<Bytes>,
    ) -> BoxFut<'a, Result<Resp, String>> {
        Box::pin(async move {
            let mut builder = hyper::Request::builder().method(method).uri(url);
            for (name, value) in headers {
                builder = builder.header(name, value);
            }
            let request = builder
                .body(Full::new(body.unwrap_or_default()))
                .map_err(|e| format!("bad request for {url}: {e}"))?;
            let _permit = self.in_flight.acquire().await.map_err(|e| e.to_string())?;
            let started = Instant::now();
            let result = tokio::time::timeout(self.timeout, async {
                let response = self
                    .client
                    .request(request)
                    .await
                    .map_err(|e| format!("{url}: {}", error_chain(&e)))?;
                let status = response.status().as_u16();
                let json_body = response
                    .headers()
                    .get(hyper::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("json"));
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| format!("{url}: reading the body: {e}"))?
                    .to_bytes();
                Ok(Resp {
                    status,
                    body,
                    json_body,
                })
            })
            .await
            .unwrap_or_else(|_| Err(format!("{url}: timed out after {:?}", self.timeout)));
            self.stats.record(kind, started.elapsed(), result.is_ok());
            result
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Log-linear latency histogram (16 sub-buckets per power of two, microseconds; ≤ 6 % error).
pub(crate) struct Histogram {
    buckets: Vec<AtomicU64>,
}

const SUB: u64 = 16;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..(SUB as usize) * 40)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }
}

impl Histogram {
    fn index(us: u64) -> usize {
        if us < SUB {
            return us as usize;
        }
        let octave = 63 - us.leading_zeros() as u64; // ≥ 4
        let sub = (us >> (octave - 4)) & (SUB - 1);
        (SUB + (octave - 4) * SUB + sub) as usize
    }

    fn upper_bound(index: usize) -> u64 {
        let index = index as u64;
        if index < SUB {
            return index;
        }
        let octave = (index - SUB) / SUB + 4;
        let sub = (index - SUB) % SUB;
        ((SUB + sub + 1) << (octave - 4)) - 1
    }

    fn record(&self, d: Duration) {
        let i = Self::index(d.as_micros() as u64).min(self.buckets.len() - 1);
        self.buckets[i].fetch_add(1, Relaxed);
    }

    fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Relaxed);
        }
    }

    /// The latency (µs) at or under which `q` of the samples fall.
    fn quantile(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::upper_bound(i));
            }
        }
        None
    }
}

#[derive(Default)]
pub(crate) struct Stats {
    requests: [AtomicU64; KINDS],
    errors: AtomicU64,
    all: Histogram,
    next: Histogram,
}

impl Stats {
    fn record(&self, kind: Kind, elapsed: Duration, ok: bool) {
        self.requests[kind as usize].fetch_add(1, Relaxed);
        if !ok {
            self.errors.fetch_add(1, Relaxed);
        }
        self.all.record(elapsed);
        if kind == Kind::Next {
            self.next.record(elapsed);
        }
    }

    pub(crate) fn reset(&self) {
        for r in &self.requests {
            r.store(0, Relaxed);
        }
        self.errors.store(0, Relaxed);
        self.all.reset();
        self.next.reset();
    }

    pub(crate) fn snapshot(&self) -> NetStats {
        let count = |k: Kind| self.requests[k as usize].load(Relaxed);
        let ms = |h: &Histogram, q| h.quantile(q).map(|us| us as f64 / 1000.0);
        NetStats {
            requests: self.requests.iter().map(|r| r.load(Relaxed)).sum(),
            transport_errors: self.errors.load(Relaxed),
            auth_requests: count(Kind::Auth),
            next_requests: count(Kind::Next),
            status_requests: count(Kind::Status),
            inventory_requests: count(Kind::Inventory),
            downloads: count(Kind::Download),
            log_requests: count(Kind::Log),
            p50_ms: ms(&self.all, 0.50),
            p99_ms: ms(&self.all, 0.99),
            max_ms: ms(&self.all, 1.0),
            next_p99_ms: ms(&self.next, 0.99),
        }
    }
}

/// Request counts and latencies (send to full response body) since start or the last reset.
/// Latency excludes waiting for the fleet's in-flight bound; quantiles are bucket upper bounds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NetStats {
    pub requests: u64,
    pub transport_errors: u64,
    pub auth_requests: u64,
    pub next_requests: u64,
    pub status_requests: u64,
    pub inventory_requests: u64,
    pub downloads: u64,
    pub log_requests: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// p99 of `deployments/next` requests only.
    pub next_p99_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_within_bucket_error() {
        let h = Histogram::default();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        let p99 = h.quantile(0.99).unwrap() as f64;
        assert!((9900.0..=9900.0 * 1.07).contains(&p99), "{p99}");
        let p50 = h.quantile(0.5).unwrap() as f64;
        assert!((5000.0..=5000.0 * 1.07).contains(&p50), "{p50}");
        for i in 0..500 {
            assert!(Histogram::upper_bound(i) < Histogram::upper_bound(i + 1));
            assert_eq!(Histogram::index(Histogram::upper_bound(i)), i);
        }
    }
}
