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
    names::FLEET_DAYS_DUE,
    names::DNS_LOGGED,
    names::FLEET_LAST_SENT,
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
            // A fleet's panel reads a sum recorded at each site (fleet/rules.yml).
            let recorded = recorded_names().iter().any(|r| expr.contains(r.as_str()));
            assert!(
                !used.is_empty() || recorded,
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

/// The series contrib/prometheus/fleet/rules.yml records.
fn recorded_names() -> Vec<String> {
    std::fs::read_to_string(root().join("contrib/prometheus/fleet/rules.yml"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .map(str::to_owned)
        .collect()
}

/// The fleet's Prometheus files (docs/FLEET.md): the recording rules and their alert
/// pass promtool's unit tests and use only exported metrics; the site's server config
/// (with the rules) and the agent config pass `promtool check config`; the dashboard
/// can choose a site and reads the recorded sums.
#[test]
fn fleet_prometheus_files_check() {
    if !require("promtool") {
        return;
    }
    let dir = root().join("contrib/prometheus/fleet");
    let promtool = |args: &[&str], cwd: &Path| {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(cwd)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    promtool(&["test", "rules", "rules_test.yml"], &dir);
    let rules = std::fs::read_to_string(dir.join("rules.yml")).unwrap();
    for name in metric_names(&rules) {
        assert!(
            EXPORTED.contains(&name.as_str()),
            "fleet/rules.yml uses {name}, which telesink does not export"
        );
    }
    let tmp = TempDir::new("fleet-prom");
    tmp.write("rules.yml", &rules);
    let site = std::fs::read_to_string(dir.join("site.yml"))
        .unwrap()
        .replace(
            "/etc/prometheus/telesink-fleet-rules.yml",
            &tmp.path().join("rules.yml").display().to_string(),
        );
    tmp.write("site.yml", &site);
    promtool(&["check", "config", "site.yml"], tmp.path());
    promtool(&["check", "config", "--agent", "agent.yml"], &dir);
    // What the site sends includes every recorded series.
    assert!(site.contains("gateway_.*"), "{site}");
    let dash = std::fs::read_to_string(root().join("contrib/grafana/telesink.json")).unwrap();
    assert!(dash.contains("label_values(telesink_build_info, site)"));
    assert!(dash.contains("gateway_profile:blocked_dns:rate5m"));
}
