//! Wall-clock time as Unix seconds: timed toggles and the state file store deadlines this
//! way, so they survive a restart.

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
