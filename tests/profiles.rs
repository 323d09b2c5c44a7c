//! The shipped profiles and lists, through the real resolver on the shipped config.
//! knotd answers every forwarded name with 203.0.113.1 (a root wildcard), so each name
//! is visibly either sinkholed (0.0.0.0 + EDE 15) or forwarded.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use hickory_proto::rr::RecordType;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped config, served on an ephemeral port with knotd as the only upstream.
fn shipped(knot: &Knot, extra: &str) -> Telesink {
    let dir = TempDir::new("shipped");
    let mut text = std::fs::read_to_string(root().join("config/telesink.toml")).unwrap();
    let lists = root().join("blocklists");
    text = text.replace(
        "lists_dir = \"../blocklists\"",
        &format!("lists_dir = {:?}", lists.display().to_string()),
    );
    text.push_str(extra);
    let cfg: PathBuf = dir.write("telesink.toml", &text);
    let upstream = knot.addr.to_string();
    Telesink::start_with(
        dir,
        &cfg,
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream,
            "--metrics",
            "127.0.0.1:0",
        ],
    )
}

fn blocked(ts: &Telesink, name: &str) -> bool {
    let m = ts.q(name, RecordType::A);
    match addrs(&m).as_slice() {
        [a] if a == "0.0.0.0" => {
            assert_eq!(
                ede(&m).map(|e| e.0),
                Some(15),
                "{name}: sinkhole without EDE"
            );
            true
        }
        [a] if a == "203.0.113.1" => false,
        other => panic!("{name}: unexpected answer {other:?} {m:?}"),
    }
}

/// Names the default profiles must stop: the documented Office and Windows collectors.
const MUST_BLOCK: &[&str] = &[
    "nexus.officeapps.live.com",
    "mobile.pipe.aria.microsoft.com",
    "browser.pipe.aria.microsoft.com",
    "office.events.data.microsoft.com",
    "hubblecontent.osi.office.net",
    "telemetry.firstpartyapps.oaspapps.com",
    "euc-word-telemetry.officeapps.live.com",
    "v10.events.data.microsoft.com",
    "v20.events.data.microsoft.com",
    "eu-v10c.events.data.microsoft.com",
    "watson.telemetry.microsoft.com",
    "umwatsonc.events.data.microsoft.com",
    "oca.telemetry.microsoft.com",
    "vortex.data.microsoft.com",
    "v10.vortex-win.data.microsoft.com",
    "anything.vortex-win.data.microsoft.com",
    "telecommand.telemetry.microsoft.com",
    "arc.msn.com",
];

/// Names that must keep working: sign-in, activation, licensing, updates, Defender,
/// settings-win, and the endpoints whose blocking is documented to break Office.
const MUST_FORWARD: &[&str] = &[
    "login.microsoftonline.com",
    "login.live.com",
    "login.microsoft.com",
    "graph.microsoft.com",
    "ols.officeapps.live.com",
    "officeclient.microsoft.com",
    "officecdn.microsoft.com",
    "outlook.office365.com",
    "teams.microsoft.com",
    "self.events.data.microsoft.com",
    "nexusrules.officeapps.live.com",
    "ecs.office.com",
    "settings-win.data.microsoft.com",
    "wdcp.microsoft.com",
    "spynet2.microsoft.com",
    "fe3.delivery.mp.microsoft.com",
    "activation.sls.microsoft.com",
    "licensing.mp.microsoft.com",
    "www.msftconnecttest.com",
    "time.windows.com",
    "edge.activity.windows.com",
];

#[test]
fn default_profiles_block_telemetry_and_keep_sign_in_and_updates() {
    if !require("knotd") {
        return;
    }
    let knot = Knot::start_zones(&[(".", ROOT_WILDCARD)]);
    let ts = shipped(&knot, "");
    let wrongly_passed: Vec<_> = MUST_BLOCK.iter().filter(|n| !blocked(&ts, n)).collect();
    let wrongly_blocked: Vec<_> = MUST_FORWARD.iter().filter(|n| blocked(&ts, n)).collect();
    assert!(wrongly_passed.is_empty(), "not blocked: {wrongly_passed:?}");
    assert!(
        wrongly_blocked.is_empty(),
        "blocked but must work: {wrongly_blocked:?}"
    );
}

/// Every allowlist entry, read from the shipped files: exact entries as written, suffix
/// entries by their apex.
fn allowlist_names() -> Vec<String> {
    let mut out = Vec::new();
    for f in ["allow-office-core.domains", "allow-windows-core.domains"] {
        let text = std::fs::read_to_string(root().join("blocklists").join(f)).unwrap();
        for line in text.lines() {
            let entry = line.split('#').next().unwrap().trim();
            if !entry.is_empty() {
                out.push(entry.trim_start_matches("*.").to_owned());
            }
        }
    }
    assert!(
        out.len() > 200,
        "allowlists unexpectedly short: {}",
        out.len()
    );
    out
}

#[test]
fn with_every_profile_on_the_allowlists_still_win_and_narrow_blocks_still_apply() {
    if !require("knotd") {
        return;
    }
    let knot = Knot::start_zones(&[(".", ROOT_WILDCARD)]);
    let text = std::fs::read_to_string(root().join("config/telesink.toml")).unwrap();
    let all: Vec<String> = text
        .lines()
        .filter_map(|l| {
            l.strip_prefix("[profiles.")?
                .strip_suffix(']')
                .map(|p| format!("{p:?}"))
        })
        .collect();
    assert!(all.len() >= 10);
    let ts = shipped(
        &knot,
        &format!(
            "\n[[groups]]\nname = \"default\"\nenable = [{}]\n",
            all.join(", ")
        ),
    );
    let blocked_allow: Vec<String> = allowlist_names()
        .into_iter()
        .filter(|n| blocked(&ts, n))
        .collect();
    assert!(
        blocked_allow.is_empty(),
        "allowlisted but blocked: {blocked_allow:?}"
    );
    // Exact blocks beneath broad allow rules keep applying.
    for name in [
        "nexus.officeapps.live.com",
        "nexusrules.officeapps.live.com",
        "self.events.data.microsoft.com",
    ] {
        assert!(
            blocked(&ts, name),
            "{name} must stay blocked under *.officeapps.live.com / strict"
        );
    }
}

/// The shipped config observes office-telemetry-strict: the main Office collector is not
/// blocked (Microsoft multiplexes it with cloud save), but each client that still sends
/// to it is counted, so an admin sees where the Office policy is not applied.
#[test]
fn the_shipped_config_observes_the_main_office_collector() {
    if !require("knotd") || !require("curl") {
        return;
    }
    let knot = Knot::start_zones(&[(".", ROOT_WILDCARD)]);
    let ts = shipped(&knot, "");
    assert!(!blocked(&ts, "self.events.data.microsoft.com"));
    assert!(!blocked(&ts, "self.events.data.microsoft.com"));
    let log = ts.log_text();
    let addr = log
        .lines()
        .find_map(|l| {
            l.split("metrics listening on ")
                .nth(1)?
                .trim()
                .parse::<std::net::SocketAddr>()
                .ok()
        })
        .expect("metrics address");
    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("http://{addr}/metrics")])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "telesink_dns_logged_total{client=\"127.0.0.1\",profile=\"office-telemetry-strict\"} 2"
        ),
        "{text}"
    );
    let (ok, status, _) = ts.ctl(&["status", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(
        v["groups"][0]["log_only"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "office-telemetry-strict"),
        "{status}"
    );
}

/// The corrections of the 2026-12 list review, on the shipped config: a Microsoft 365
/// Required name leaves the default ads profile, missing telemetry names are blocked, and
/// Windows Update statistics are handled one way (open).
#[test]
fn the_reviewed_list_corrections_hold() {
    if !require("knotd") {
        return;
    }
    let knot = Knot::start_zones(&[(".", ROOT_WILDCARD)]);
    let ts = shipped(&knot, "");
    for name in [
        "c1.microsoft.com",
        "statsfe1.ws.microsoft.com",
        "statsfe2.ws.microsoft.com",
        "statsfe2.update.microsoft.com",
        "choice.microsoft.com",
        "api.mullvad.net",
    ] {
        assert!(!blocked(&ts, name), "{name} must stay open");
    }
    for name in [
        "telecommandstorageprod.blob.core.windows.net",
        "telemetry.api.swiftkey.com",
        "c.bing.com",
    ] {
        assert!(blocked(&ts, name), "{name} must be blocked by default");
    }
    drop(ts);
    let ts = shipped(
        &knot,
        "\n[[groups]]\nname = \"default\"\nenable = [\"dns-bypass\", \"office-telemetry-strict\", \"office-connected-experiences\"]\n",
    );
    for name in [
        "dns.mullvad.net",
        "adblock.dns.mullvad.net",
        "otelrules.svc.static.microsoft",
        "petrol.office.microsoft.com",
    ] {
        // Any answer mode (dns-bypass answers NXDOMAIN): the EDE says a profile blocked it.
        let m = ts.q(name, RecordType::A);
        assert_eq!(
            ede(&m).map(|e| e.0),
            Some(15),
            "{name} must be blocked when its profile is on: {m:?}"
        );
    }
    assert!(
        !blocked(&ts, "api.mullvad.net"),
        "a VPN app's API is not DoH"
    );
}
