//! Client-side rate limiting of API requests, as client-go does it for
//! `--kube-api-qps` / `--kube-api-burst`: a token bucket that starts full
//! with `burst` tokens and refills at `qps` per second; a request waits for
//! its token (reserved in arrival order) instead of failing. QPS 0 means
//! client-go's default (5), burst 0 its default (10), and a negative QPS
//! turns the limit off.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use kube::client::Body;

pub const DEFAULT_QPS: f32 = 5.0;
pub const DEFAULT_BURST: i32 = 10;

/// The bucket itself, with time passed in: unit-tested without a clock.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// None when the limit is off.
    pub fn new(qps: f32, burst: i32, now: Instant) -> Option<Self> {
        let qps = if qps == 0.0 { DEFAULT_QPS } else { qps };
        let burst = if burst == 0 { DEFAULT_BURST } else { burst };
        if qps <= 0.0 || !qps.is_finite() {
            return None;
        }
        let burst = f64::from(burst.max(1));
        Some(Self {
            rate: f64::from(qps),
            burst,
            tokens: burst,
            last: now,
        })
    }

    /// Take a token for a request made at `now`; returns how long the
    /// request must wait for it (zero while the burst lasts).
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// A tower service in front of the API client that waits for a token
/// before each request (a watch takes one when it starts).
#[derive(Clone)]
pub struct RateLimited {
    inner: kube::Client,
    bucket: Arc<Mutex<TokenBucket>>,
}

impl RateLimited {
    /// `client`, limited; or `client` as it is when the limit is off.
    pub fn wrap(client: kube::Client, qps: f32, burst: i32) -> kube::Client {
        match TokenBucket::new(qps, burst, Instant::now()) {
            None => client,
            Some(bucket) => {
                let ns = client.default_namespace().to_string();
                let limited = RateLimited {
                    inner: client,
                    bucket: Arc::new(Mutex::new(bucket)),
                };
                kube::Client::new(limited, ns)
            }
        }
    }
}

impl tower::Service<http::Request<Body>> for RateLimited {
    type Response = http::Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let wait = self
            .bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reserve(Instant::now());
        let inner = self.inner.clone();
        Box::pin(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            inner.send(req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_requests_are_spaced_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5.0, 10, t0).unwrap();
        for _ in 0..10 {
            assert_eq!(b.reserve(t0), Duration::ZERO);
        }
        // Tokens are reserved in order: the 11th waits 0.2 s, the 12th 0.4 s.
        assert_eq!(b.reserve(t0), Duration::from_millis(200));
        assert_eq!(b.reserve(t0), Duration::from_millis(400));
        // A second later five tokens have come back, two of them owed.
        let later = t0 + Duration::from_secs(1);
        for _ in 0..3 {
            assert_eq!(b.reserve(later), Duration::ZERO);
        }
        assert!(b.reserve(later) > Duration::ZERO);
    }

    #[test]
    fn defaults_and_off_as_client_go() {
        let t0 = Instant::now();
        let b = TokenBucket::new(0.0, 0, t0).unwrap();
        assert_eq!((b.rate, b.burst), (5.0, 10.0));
        assert!(TokenBucket::new(-1.0, 10, t0).is_none());
    }
}
