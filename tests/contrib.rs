//! The shipped Prometheus alert rules and Grafana dashboard: the rules pass promtool's own
//! unit tests, and every query in the dashboard names only metrics telesink exports.

mod common;

use std::path::Path;

use common::*;
use telesink::metrics::names;

const EXPORTED: &[&str] = &[
    names::DNS_QUERIES,
    names::DNS_BLOCKED,
    names::FIREWALL_REJECTS,
    names::BYPASS_ATTEMPTS,
    names::CLIENT_OVERFLOW,
    names::SHADOW_ADDED,
    names::SHADOW_ALLOW_SKIPPED,
    names::RELOADS,
    names::POLICY_GENERATION,
    names::LAST_RELOAD,
    names::LIST_ENTRIES,
    names::CACHE_ENTRIES,
    names::IN_FLIGHT,
    names::CLIENTS_SEEN,
    names::BUILD_INFO,
    names::UPSTREAM_ERRORS,
    names::CLUSTER_CONNECTED,
    names::CLUSTER_NODE_REVISION,
    names::CLUSTER_MISMATCH,
    names::CLUSTER_NODE_INFO,
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `telesink_*` identifier in a query.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("telesink_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn alert_rules_pass_their_promtool_unit_tests() {
    if !require("promtool") {
        return;
    }
    let dir = root().join("contrib/prometheus");
    let out = std::process::Command::new("promtool")
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    for name in metric_names(&rules) {
        assert!(
            EXPORTED.contains(&name.as_str()),
            "alerts.yml uses {name}, which telesink does not export"
        );
    }
}

#[test]
fn every_dashboard_query_uses_exported_metrics() {
    let text = std::fs::read_to_string(root().join("contrib/grafana/telesink.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let panels = dash["panels"].as_array().expect("panels");
    let mut queries = 0;
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            let used = metric_names(expr);
            assert!(
                !used.is_empty(),
                "panel {:?} queries no telesink metric",
                panel["title"]
            );
            for name in used {
                assert!(
                    EXPORTED.contains(&name.as_str()),
                    "panel {:?} uses {name}, not exported",
                    panel["title"]
                );
            }
            queries += 1;
        }
    }
    assert!(queries >= 8, "{queries} queries");
    // DNS and firewall side by side, and bypass attempts, as the dashboard promises.
    assert!(
        text.contains("telesink_dns_blocked_total")
            && text.contains("telesink_firewall_rejects_total")
    );
    assert!(text.contains("telesink_bypass_attempts_total"));
}
