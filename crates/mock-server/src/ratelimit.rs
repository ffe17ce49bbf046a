//! A per-server token bucket for [`crate::settings::RateLimit`], and the 429 answer with
//! `Retry-After` (whole seconds, rounded up) and `X-Retry-In` (a Go duration), as the
//! Traefik gateway sends it (plain text) or the services' own limiter (JSON).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::settings::RateLimit;

#[derive(Default)]
pub(crate) struct Limiter {
    inner: Mutex<Option<Bucket>>,
}

struct Bucket {
    config: RateLimit,
    tokens: f64,
    last: Instant,
}

impl Limiter {
    /// Takes one token; `Err(wait)` when empty, with the time until the next token.
    pub(crate) fn take(&self, config: &RateLimit) -> Result<(), Duration> {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = match inner.as_mut() {
            Some(b) if b.config == *config => b,
            _ => inner.insert(Bucket {
                config: config.clone(),
                tokens: f64::from(config.burst),
                last: now,
            }),
        };
        let elapsed = now.duration_since(bucket.last).as_secs_f64();
        bucket.tokens =
            (bucket.tokens + elapsed * config.requests_per_second).min(f64::from(config.burst));
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / config.requests_per_second;
            Err(Duration::from_secs_f64(wait.max(0.001)))
        }
    }

    /// Forgets the bucket (a new configuration starts full).
    pub(crate) fn reset(&self) {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// `Retry-After`: whole seconds, rounded up, at least 1.
pub(crate) fn retry_after(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

/// Go's `time.Duration.String()` for the waits we produce: `250ms`, `1.5s`, `2m3s`.
pub(crate) fn go_duration(wait: Duration) -> String {
    let ms = wait.as_millis();
    if ms < 1000 {
        return format!("{}ms", ms.max(1));
    }
    let secs = wait.as_secs_f64();
    let fmt_secs = |s: f64| {
        let text = format!("{s:.3}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        format!("{text}s")
    };
    if secs < 60.0 {
        fmt_secs(secs)
    } else {
        let minutes = (secs / 60.0).floor();
        format!("{}m{}", minutes as u64, fmt_secs(secs - minutes * 60.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{RateLimitBody, RateLimitScope};

    #[test]
    fn bucket_and_formats() {
        let config = RateLimit {
            requests_per_second: 2.0,
            burst: 3,
            body: RateLimitBody::Plain,
            scope: RateLimitScope::All,
        };
        let limiter = Limiter::default();
        for _ in 0..3 {
            assert!(limiter.take(&config).is_ok());
        }
        let wait = limiter.take(&config).unwrap_err();
        assert!(wait <= Duration::from_millis(500) && wait > Duration::from_millis(300));
        assert_eq!(retry_after(wait), 1);
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(2)), "2s");
        assert_eq!(go_duration(Duration::from_secs(123)), "2m3s");
        assert_eq!(retry_after(Duration::from_millis(1200)), 2);
        limiter.reset();
        assert!(limiter.take(&config).is_ok());
    }
}
