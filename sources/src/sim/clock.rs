//! Event time for simulated traffic: a day/night rhythm over a window.

use chrono::{DateTime, Duration, Utc};

/// Relative shop activity per UTC hour: quiet nights, a lunch peak and an
/// evening peak.
const HOURLY_ACTIVITY: [f64; 24] = [
    0.15, 0.08, 0.05, 0.04, 0.05, 0.10, 0.25, 0.45, 0.70, 0.85, 0.95, 1.10, 1.25, 1.15, 1.00, 0.95, 1.00,
    1.10, 1.30, 1.45, 1.35, 1.00, 0.60, 0.30,
];

/// Maps "the k-th of n events" to an instant in `[start, start + days)`,
/// with more events in busy hours. Non-decreasing in k.
#[derive(Debug, Clone)]
pub struct DiurnalClock {
    start: DateTime<Utc>,
    /// Cumulative activity at the end of each hour of the window, normalised to 1.
    cumulative: Vec<f64>,
}

impl DiurnalClock {
    /// A clock over `days` days from `start` (`days` > 0).
    pub fn new(start: DateTime<Utc>, days: f64) -> Self {
        let hours = (days * 24.0).ceil().max(1.0) as usize;
        let first_hour = start.timestamp().rem_euclid(86_400) / 3_600;
        let mut acc = 0.0;
        let mut cumulative = Vec::with_capacity(hours);
        for h in 0..hours {
            let w = HOURLY_ACTIVITY[(first_hour as usize + h) % 24];
            // A partial last hour counts for its fraction.
            let frac = (days * 24.0 - h as f64).clamp(0.0, 1.0);
            acc += w * frac;
            cumulative.push(acc);
        }
        for c in &mut cumulative {
            *c /= acc;
        }
        DiurnalClock { start, cumulative }
    }

    /// The instant for position `u` in `[0, 1)` of the traffic.
    pub fn at(&self, u: f64) -> DateTime<Utc> {
        let u = u.clamp(0.0, 1.0 - f64::EPSILON);
        let h = self.cumulative.partition_point(|c| *c <= u);
        let h = h.min(self.cumulative.len() - 1);
        let lo = if h == 0 { 0.0 } else { self.cumulative[h - 1] };
        let within = if self.cumulative[h] > lo { (u - lo) / (self.cumulative[h] - lo) } else { 0.0 };
        let millis = ((h as f64 + within) * 3_600_000.0) as i64;
        self.start + Duration::milliseconds(millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_hours_get_more_events() {
        let start = DateTime::parse_from_rfc3339("2026-11-24T00:00:00Z").expect("ts").with_timezone(&Utc);
        let clock = DiurnalClock::new(start, 1.0);
        let mut per_hour = [0u32; 24];
        let mut last = start;
        for k in 0..24_000 {
            let t = clock.at(k as f64 / 24_000.0);
            assert!(t >= last && t < start + Duration::days(1));
            last = t;
            per_hour[(t - start).num_hours() as usize] += 1;
        }
        assert!(per_hour[19] > 5 * per_hour[3], "{per_hour:?}");
    }
}
