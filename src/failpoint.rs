//! Failures a test can inject into the real binary, to prove that a failure branch rolls
//! back completely: `TELESINK_FAILPOINTS=name,name` in the daemon's environment. Only in
//! debug builds (what `cargo test` runs); a release build has none and reads nothing.

/// Whether the failure `name` is to be injected here.
pub fn hit(name: &str) -> bool {
    #[cfg(debug_assertions)]
    {
        std::env::var("TELESINK_FAILPOINTS").is_ok_and(|v| v.split(',').any(|n| n == name))
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = name;
        false
    }
}

/// The error an injected failure reports.
pub fn error(name: &str) -> std::io::Error {
    std::io::Error::other(format!("failure injected at {name} (TELESINK_FAILPOINTS)"))
}
