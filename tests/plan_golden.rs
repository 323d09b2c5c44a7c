//! The firewall plan as nft text, compared with reviewed golden files: the shipped
//! configs and the edge cases (groups with the default group's negation and a shadow
//! profile's learned sets, bypass by reject and by redirect with DoH ranges, no output
//! chain, drop instead of reject). Runs without root.
//! When root, each is also checked by `nft -c` in a throwaway network namespace.
//! After an intended change: `TELESINK_BLESS=1 cargo test --test plan_golden`, then
//! review the diff of tests/golden/ like code.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const EDGE_BASE: &str = r#"[policy]
lists_dir = "."
[firewall]
enabled = true
lan = ["lan0"]
wan = ["wan0"]
allow_cidrs = ["allow.cidrs"]
"#;

fn edge(name: &str, firewall_extra: &str, rest: &str) -> (String, String) {
    (
        name.to_owned(),
        format!(
            "{EDGE_BASE}{firewall_extra}\n[profiles.tele]\nenabled = true\ncidrs = [\"block.cidrs\"]\n{rest}"
        ),
    )
}

fn cases() -> Vec<(String, String)> {
    vec![
        edge("edge-basic", "", ""),
        edge(
            "edge-groups",
            "",
            "[profiles.extra]\ncidrs = [\"extra.cidrs\"]\nshadow = true\n[[groups]]\nname = \"lab\"\nclients = [\"192.0.2.64/27\"]\nenable = [\"extra\"]\ndisable = [\"tele\"]\n",
        ),
        edge(
            "edge-bypass-reject",
            "[firewall.bypass]\nenabled = true\ndoh_cidrs = [\"doh.cidrs\"]\n",
            "",
        ),
        edge(
            "edge-bypass-redirect",
            "[firewall.bypass]\nenabled = true\ndns_action = \"redirect\"\ndoh_cidrs = [\"doh.cidrs\"]\n",
            "",
        ),
        edge(
            "edge-no-output-drop",
            "output = false\nverdict = \"drop\"\n",
            "",
        ),
    ]
}

fn show(cfg: &Path) -> String {
    let out = std::process::Command::new(bin())
        .args(["firewall", "show", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        cfg.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn golden(name: &str, text: &str) {
    let path: PathBuf = root().join("tests/golden").join(format!("{name}.nft"));
    if std::env::var("TELESINK_BLESS").as_deref() == Ok("1") {
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    if want != text {
        let diff: Vec<String> = want
            .lines()
            .zip(text.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(5)
            .map(|(i, (a, b))| format!("line {}: golden {a:?}\n         now    {b:?}", i + 1))
            .collect();
        panic!(
            "{name}: the plan differs from {} ({} vs {} lines):\n{}\nIf intended: TELESINK_BLESS=1 cargo test --test plan_golden, and review the diff.",
            path.display(),
            want.lines().count(),
            text.lines().count(),
            diff.join("\n")
        );
    }
}

/// `nft -c` (check only, nothing applied) in a throwaway network namespace, as root.
fn nft_accepts(name: &str, text: &str) {
    let is_root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !is_root || !require("nft") || !require("unshare") {
        if !is_root {
            skip("nft -c needs root for a throwaway network namespace");
        }
        return;
    }
    let dir = TempDir::new("golden");
    let file = dir.write(&format!("{name}.nft"), text);
    let out = std::process::Command::new("unshare")
        .args(["-n", "nft", "-c", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: nft -c refused it:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_plans_match_their_golden_files_and_nft_accepts_them() {
    let dir = TempDir::new("plans");
    dir.write("allow.cidrs", "203.0.113.7/32\n");
    dir.write("block.cidrs", "203.0.113.0/28\n2001:db8:f::/124\n");
    dir.write("extra.cidrs", "198.51.100.128/25\n");
    dir.write("doh.cidrs", "192.0.2.53\n2001:db8:53::1\n");
    let mut all = Vec::new();
    for (name, config) in cases() {
        let cfg = dir.write(&format!("{name}.toml"), &config);
        all.push((name, show(&cfg)));
    }
    for shipped in ["telesink", "gateway"] {
        let text = std::fs::read_to_string(root().join(format!("config/{shipped}.toml"))).unwrap();
        let text = text.replace(
            "lists_dir = \"../blocklists\"",
            &format!(
                "lists_dir = {:?}",
                root().join("blocklists").display().to_string()
            ),
        );
        let cfg = dir.write(&format!("shipped-{shipped}.toml"), &text);
        all.push((format!("shipped-{shipped}"), show(&cfg)));
    }
    for (name, text) in &all {
        golden(name, text);
        nft_accepts(name, text);
    }
}

/// `firewall show --json`: the same plan for scripts (sets with their elements, the nft
/// text), identical to the text form.
#[test]
fn firewall_show_json_matches_the_text() {
    let cfg = root().join("config/gateway.toml");
    let text = show(&cfg);
    let out = std::process::Command::new(bin())
        .args(["firewall", "show", "--json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["nft"].as_str(), Some(text.as_str()));
    assert_eq!(v["table"], "inet telesink");
    let doh = v["sets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "doh_4")
        .expect("doh_4");
    assert!(
        doh["elements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "9.9.9.9"),
        "{doh}"
    );
}
