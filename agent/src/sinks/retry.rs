//! [`RetryPolicy`]: exponential backoff with full jitter between a floor and a ceiling,
//! forever; and reading `Retry-After`.

use std::time::{Duration, SystemTime};

use rand::Rng;

/// Backoff between failed attempts: attempt `n` waits a random time in
/// `[initial, min(max, initial * 2^n)]` ("full jitter" above the floor).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The first backoff's upper bound and every backoff's floor.
    pub initial: Duration,
    /// The ceiling.
    pub max: Duration,
}

impl RetryPolicy {
    /// How long to wait before attempt `attempt + 1` (`attempt` counts from 0).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX))
            .min(self.max);
        if ceiling <= self.initial {
            return ceiling;
        }
        let span = (ceiling - self.initial).as_millis() as u64;
        self.initial + Duration::from_millis(rand::rng().random_range(0..=span))
    }
}

/// A `Retry-After` value: seconds or an HTTP date. Capped at one hour so that a broken
/// header cannot park a sink for days.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    let wait = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(v).ok()?;
        at.duration_since(SystemTime::now()).unwrap_or_default()
    };
    Some(wait.min(Duration::from_secs(3600)))
}

/// The `Retry-After` of a response, if it has a readable one.
pub fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_between_floor_and_ceiling_and_grows() {
        let p = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for attempt in 0..40 {
            let b = p.backoff(attempt);
            assert!(b >= p.initial && b <= p.max, "{attempt}: {b:?}");
        }
        assert_eq!(p.backoff(0), p.initial);
        // Grows: attempt n is bounded by initial * 2^n, and over many draws reaches past
        // the previous bound (full jitter spreads it over the whole span).
        for attempt in 1..5u32 {
            let bound = p.initial * 2u32.pow(attempt);
            let previous = p.initial * 2u32.pow(attempt - 1);
            let draws: Vec<Duration> = (0..400).map(|_| p.backoff(attempt)).collect();
            assert!(
                draws.iter().all(|b| *b <= bound),
                "attempt {attempt}: over {bound:?}"
            );
            assert!(
                draws.iter().any(|b| *b > previous),
                "attempt {attempt}: never above the previous bound {previous:?}"
            );
        }
        // At the ceiling it stays there: never above max, and reaching near it.
        let draws: Vec<Duration> = (0..400).map(|_| p.backoff(20)).collect();
        assert!(draws.iter().any(|b| *b > p.max * 3 / 4));
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        let later = SystemTime::now() + Duration::from_secs(30);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap_or_default();
        assert!(d > Duration::from_secs(25) && d <= Duration::from_secs(30));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
