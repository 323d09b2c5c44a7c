//! Wall-clock time as Unix seconds: timed toggles and the state file store deadlines this
//! way, so they survive a restart.

pub fn unix_now() -> u64 {
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    real + test_clock::offset()
}

/// Wall-clock time as Unix milliseconds (the cluster's node reports), on the same clock.
pub fn unix_millis() -> u64 {
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    real + test_clock::offset() * 1000
}

/// A clock that tests can move forward, so a month of day rollovers and device expiry
/// runs in minutes: `TELESINK_TEST_CLOCK=<file>` names a file holding the seconds to add
/// to the real time, read every 50 ms. Debug builds only (like src/failpoint.rs): a
/// release build has no such variable and its `offset` is the constant 0.
#[cfg(debug_assertions)]
pub mod test_clock {
    use std::sync::atomic::{AtomicU64, Ordering};

    static OFFSET: AtomicU64 = AtomicU64::new(0);

    pub fn offset() -> u64 {
        OFFSET.load(Ordering::Relaxed)
    }

    /// Starts following the file the environment names, if it names one; the daemon
    /// calls this once at start, before anything reads the time.
    pub fn follow_env() {
        let Some(path) = std::env::var_os("TELESINK_TEST_CLOCK") else {
            return;
        };
        let read = move || {
            std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
        };
        if let Some(n) = read() {
            OFFSET.store(n, Ordering::Relaxed);
        }
        tracing::warn!("test clock: time moved {} s ahead", offset());
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(50));
                if let Some(n) = read()
                    && n != OFFSET.swap(n, Ordering::Relaxed)
                {
                    tracing::warn!("test clock: time moved {n} s ahead");
                }
            }
        });
    }
}

#[cfg(not(debug_assertions))]
pub mod test_clock {
    #[inline(always)]
    pub fn offset() -> u64 {
        0
    }

    pub fn follow_env() {}
}

/// The UTC date of a Unix time, as YYYY-MM-DD (civil-from-days, proleptic Gregorian).
pub fn utc_date(unix: u64) -> String {
    let days = (unix / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The UTC time of a Unix time, as YYYY-MM-DD HH:MM:SS UTC.
pub fn utc_time(unix: u64) -> String {
    let s = unix % 86_400;
    format!(
        "{} {:02}:{:02}:{:02} UTC",
        utc_date(unix),
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// Days since 1970-01-01 of a YYYY-MM-DD date (days-from-civil); None for anything else.
pub fn day_number(date: &str) -> Option<u32> {
    let b = date.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year: i64 = date.get(0..4)?.parse().ok()?;
    let month: i64 = date.get(5..7)?.parse().ok()?;
    let day: i64 = date.get(8..10)?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let n = u32::try_from(days).ok()?;
    // 2026-02-31 is not a day: it must come back as itself.
    (utc_date(u64::from(n) * 86_400) == date).then_some(n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(super::utc_date(0), "1970-01-01");
        assert_eq!(super::utc_date(951_782_400), "2000-02-29");
        assert_eq!(super::utc_date(1_796_083_200), "2026-12-01");
        for n in [0, 11_016, 20_788, 20_454, 40_000] {
            assert_eq!(
                super::day_number(&super::utc_date(n * 86_400)),
                Some(n as u32)
            );
        }
        assert_eq!(super::day_number("2026-02-31"), None);
        assert_eq!(super::day_number("1969-12-31"), None);
        assert_eq!(super::day_number("2026-1-01"), None);
    }
}
