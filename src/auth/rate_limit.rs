//! Rate limits on the auth endpoints, per client IP and per account,
//! answered with 429 and `Retry-After`. Kept in memory per instance.

use std::{net::IpAddr, num::NonZeroU32};

use actix_web::http::StatusCode;
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};

use crate::error::{ApiError, Problem};

pub struct RateLimits {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_account: DefaultKeyedRateLimiter<String>,
}

impl RateLimits {
    /// Attempts per minute (as a burst, refilled evenly).
    pub fn new(per_ip: u32, per_account: u32) -> Self {
        let quota = |n: u32| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Self {
            per_ip: RateLimiter::keyed(quota(per_ip)),
            per_account: RateLimiter::keyed(quota(per_account)),
        }
    }

    /// Counts one attempt from `ip` on `account` (a normalized e-mail, a
    /// Telegram id…); refuses it if either is over its limit.
    pub fn check(&self, ip: Option<IpAddr>, account: Option<&str>) -> Result<(), ApiError> {
        let clock = DefaultClock::default();
        if self.per_ip.len() > 100_000 {
            self.per_ip.retain_recent();
        }
        if self.per_account.len() > 100_000 {
            self.per_account.retain_recent();
        }
        if let Some(ip) = ip
            && let Err(not_until) = self.per_ip.check_key(&ip)
        {
            return Err(limited(not_until.wait_time_from(clock.now())));
        }
        if let Some(account) = account
            && let Err(not_until) = self.per_account.check_key(&account.to_owned())
        {
            return Err(limited(not_until.wait_time_from(clock.now())));
        }
        Ok(())
    }
}

/// `Retry-After` in whole seconds, rounded up (RFC 9110 §10.2.3): a client
/// that waits that long is let in.
fn limited(wait: std::time::Duration) -> ApiError {
    let wait_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut problem = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "Too many attempts",
    )
    .detail("too many attempts; try again later");
    problem.retry_after = Some(wait_secs.max(1));
    problem.into()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn retry_after_rounds_a_partial_second_up() {
        let seconds = |wait| match limited(wait) {
            ApiError::Problem(p) => p.retry_after,
            ApiError::Internal(_) => None,
        };
        assert_eq!(seconds(Duration::from_millis(19_800)), Some(20));
        assert_eq!(seconds(Duration::from_secs(19)), Some(19));
        assert_eq!(seconds(Duration::from_millis(1)), Some(1));
        assert_eq!(seconds(Duration::ZERO), Some(1));
    }
}
