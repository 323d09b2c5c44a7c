//! The synthetic workload shared by the benchmarks: blocklist names shaped like real
//! entries, from a fixed seed so every run (and every machine) gets the same list.
#![allow(dead_code)]

pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "ads",
    "track",
    "metrics",
    "telemetry",
    "stats",
    "pixel",
    "cdn",
    "api",
    "events",
    "collect",
    "beacon",
    "log",
    "analytics",
    "data",
    "edge",
    "static",
    "img",
    "sync",
    "push",
    "report",
    "insights",
    "click",
    "tag",
    "srv",
];
const TLDS: &[&str] = &[
    "com", "net", "org", "io", "de", "nl", "co.uk", "info", "fr", "ru", "cn", "xyz",
];

/// Names shaped like real blocklist entries: one to three labels of words, digits and
/// dashes under a registrable domain.
pub fn name(r: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..(1 + r.next() % 3) {
        s.push_str(r.pick(WORDS));
        if r.next().is_multiple_of(2) {
            s.push_str(&format!("{}", r.next() % 1000));
        }
        s.push(if r.next().is_multiple_of(4) { '-' } else { '.' });
    }
    s.push_str(r.pick(WORDS));
    s.push_str(&format!("{}", r.next() % 100_000));
    s.push('.');
    s.push_str(r.pick(TLDS));
    s
}

/// Writes `n` names (every 20th a suffix rule) to `path`; returns them with a flag for
/// the suffix rules.
pub fn write_list(path: &std::path::Path, n: usize, seed: u64) -> Vec<(String, bool)> {
    use std::io::Write;
    let mut r = Rng(seed);
    let mut names = Vec::with_capacity(n);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("list file"));
    for i in 0..n {
        let nm = name(&mut r);
        let suffix = i.is_multiple_of(20);
        if suffix {
            writeln!(f, "*.{nm}").expect("write");
        } else {
            writeln!(f, "{nm}").expect("write");
        }
        names.push((nm, suffix));
    }
    names
}
