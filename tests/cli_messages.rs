//! What an admin and a DPO read from the CLI, against the real binary and daemon:
//! every "no such X" names the valid ones and the nearest, report filters never answer a
//! typo or an impossible date with a silent zero, `--json` means JSON, subcommands take
//! the parent's options after their name, a copied ledger can be verified, and the
//! firewall commands describe the table a start would install (saved toggles included).

mod common;

use std::process::Command;

use common::control::*;
use common::*;

/// Runs the binary: (success, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn refused(ts: &Telesink, args: &[&str], want: &str) {
    let (success, out, err) = ts.ctl(args);
    assert!(!success, "{args:?} succeeded: {out}");
    assert!(err.contains(want), "{args:?}: {err}");
}

#[test]
fn unknown_names_get_the_valid_ones_and_the_nearest() {
    let Some((_knot, ts)) = start("", &[]) else {
        return;
    };
    refused(
        &ts,
        &["profile", "disable", "tel"],
        "no profile named tel; did you mean tele? profiles: tele, ads, runtime",
    );
    refused(
        &ts,
        &["profile", "disable", "tele", "--group", "wufb-managed"],
        "no group named wufb-managed; groups: default, finance",
    );
    refused(
        &ts,
        &["profile", "disable", "tele", "--for", "30"],
        "has no unit: write 30s, 30m, 30h or 30d",
    );
    refused(&ts, &["allow", "192.168.1.1"], "is an address, not a name");
    // The report's filters, through the daemon.
    ask_blocked(&ts);
    for (args, want) in [
        (
            &["report", "--since", "2026-13-01"][..],
            "not a day: \"2026-13-01\"",
        ),
        (
            &["report", "--since", "2026-02-30"][..],
            "not a day: \"2026-02-30\"",
        ),
        (
            &["report", "--since", "2026-12-05", "--until", "2026-12-01"][..],
            "the period is empty",
        ),
        (
            &["report", "--since", "1d", "--profile", "tel"][..],
            "no profile tel in the ledger or the config; did you mean tele?",
        ),
        (
            &["report", "--since", "1d", "--client", "127.0.0.9"][..],
            "no client 127.0.0.9 in the ledger or the config; did you mean 127.0.0.1?",
        ),
        (
            &["report", "--json", "--format", "csv"][..],
            "give one of them",
        ),
        (
            &["report", "purge", "--client", "nobody"][..],
            "no client nobody in the ledger, nothing purged",
        ),
    ] {
        refused(&ts, args, want);
    }
    // A profile of the config with no attempts is no typo: an empty report.
    let (success, out, err) = ts.ctl(&["report", "--since", "1d", "--profile", "ads"]);
    assert!(success, "{out}{err}");
    // --json means JSON.
    let (success, out, _) = ts.ctl(&["report", "--since", "1d", "--json"]);
    assert!(success);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert!(v["rows"].is_array(), "{v}");
}

fn ask_blocked(ts: &Telesink) {
    let m = ts.q_from("127.0.0.1", TELE, hickory_proto::rr::RecordType::A);
    assert_eq!(
        m.metadata.response_code,
        hickory_proto::op::ResponseCode::NXDomain
    );
}

#[test]
fn subcommands_take_the_parents_options_and_a_copied_ledger_verifies() {
    let Some((_knot, ts)) = start("", &[]) else {
        return;
    };
    ask_blocked(&ts);
    let socket = ts.dir.path().join("control.sock");
    let cfg = ts.dir.path().join("telesink.toml");
    // After the subcommand's name, as the README writes them.
    let (success, out, err) = run(&[
        "report",
        "verify",
        "--socket",
        socket.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(success, "{out}{err}");
    // A copy of the ledger, as an auditor gets it: no daemon, no config.
    let dir = ts.stop();
    let copy = dir.path().join("copy.sqlite");
    std::fs::copy(dir.path().join("evidence.sqlite"), &copy).unwrap();
    let (success, out, err) = run(&["report", "verify", "--ledger", copy.to_str().unwrap()]);
    assert!(success, "{out}{err}");
    assert!(out.contains("the digest chain holds"), "{out}");
    let (success, _, err) = run(&["report", "verify", "--ledger", "/nonexistent/ledger.sqlite"]);
    assert!(!success && err.contains("no ledger file"), "{err}");
}

#[test]
fn firewall_commands_show_the_table_a_start_installs() {
    let dir = TempDir::new("fw-show");
    dir.write("tele.list", "nexus.tele.test\n");
    dir.write("tele.cidrs", "198.51.100.0/24\n");
    let cfg = dir.write(
        "telesink.toml",
        &format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[policy]\nlists_dir = \".\"\n[firewall]\nenabled = true\nlan = [\"lan0\"]\n[profiles.tele]\nenabled = true\nlists = [\"tele.list\"]\ncidrs = [\"tele.cidrs\"]\n[control]\nstate_file = \"{}/state.json\"\n",
            dir.path().display()
        ),
    );
    let cfg = cfg.to_str().unwrap();
    let shown = |args: &[&str]| {
        let (success, out, err) = run(args);
        assert!(success, "{args:?}: {out}{err}");
        out
    };
    // --config before or after the subcommand.
    let before = shown(&["firewall", "--config", cfg, "show"]);
    assert_eq!(before, shown(&["firewall", "show", "--config", cfg]));
    assert!(before.contains("198.51.100.0-198.51.100.255"), "{before}");
    assert!(before.contains("@p_tele_4"), "{before}");
    // A saved toggle that switched the profile off: its rules are not in the table a
    // start would install, and show says so.
    dir.write(
        "state.json",
        "{\"version\": 1, \"toggles\": {\"profiles\": [{\"profile\": \"tele\", \"enabled\": false}]}}\n",
    );
    let after = shown(&["firewall", "show", "--config", cfg]);
    assert!(!after.contains("daddr @p_tele_4"), "{after}");
    // explain --offline reads the same saved toggles.
    let (_, out, _) = run(&["explain", "nexus.tele.test", "--offline", "--config", cfg]);
    assert!(
        !out.contains("blocked by profile tele") && out.contains("off"),
        "{out}"
    );
}

#[test]
fn firewall_remove_is_refused_while_the_daemon_runs() {
    let Some((_knot, ts)) = start("", &[]) else {
        return;
    };
    let socket = ts.dir.path().join("control.sock");
    let (success, out, err) = run(&["firewall", "remove", "--socket", socket.to_str().unwrap()]);
    assert!(!success, "{out}");
    assert!(
        err.contains("telesink is running") && err.contains("firewall.enabled = false"),
        "{err}"
    );
}

#[test]
fn config_mistakes_name_the_key_and_the_way_out() {
    let dir = TempDir::new("cfg-msg");
    let dup = dir.write(
        "dup.toml",
        "[server]\nlisten = [\"127.0.0.1:0\"]\nlisten = [\"127.0.0.1:1\"]\n",
    );
    let (fine, text) = check(&dup);
    assert!(
        !fine && text.contains("dup.toml:3: listen: duplicate key"),
        "{text}"
    );
    let typed = dir.write("typed.toml", "[metrics]\nmax_clients = \"many\"\n");
    let (fine, text) = check(&typed);
    assert!(
        !fine && text.contains("typed.toml:2: max_clients: invalid type"),
        "{text}"
    );
    let missing = dir.path().join("nothing-here.toml");
    let (fine, text) = check(&missing);
    assert!(
        !fine && text.contains("give the config with --config PATH"),
        "{text}"
    );
    // update-m365 on a saved document without its version refuses to guess.
    let saved = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/m365/endpoints-2025013000.json"
    );
    let cfg = dir.write("telesink.toml", "[server]\nlisten = [\"127.0.0.1:0\"]\n");
    let (success, _, err) = run(&[
        "update-m365",
        "--from",
        saved,
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(
        !success && err.contains("give it with --version YYYYMMDDNN"),
        "{err}"
    );
}
