//! `telesink check`: exit 0 on a good config, every problem as file:line otherwise.

mod common;

use common::*;

const GOOD: &str = r#"[policy]
lists_dir = "."
guard = "guard.list"

[profiles.p]
enabled = true
lists = ["block.list"]
"#;

fn dir_with(config: &str, block: &str) -> (TempDir, std::path::PathBuf) {
    let d = TempDir::new("check");
    d.write("guard.list", "blob.core.windows.net\nmicrosoft.com\n");
    d.write("block.list", block);
    let cfg = d.write("telesink.toml", config);
    (d, cfg)
}

#[test]
fn shipped_configs_pass() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["config/telesink.toml", "config/gateway.toml"] {
        let (ok, out) = check(&root.join(name));
        assert!(ok, "{name}: {out}");
        assert!(out.contains(": ok ("), "{out}");
    }
}

#[test]
fn a_good_config_passes() {
    let (_d, cfg) = dir_with(GOOD, "a.example\n*.b.example\n");
    let (ok, out) = check(&cfg);
    assert!(ok, "{out}");
}

#[test]
fn bad_list_lines_are_reported_with_file_and_line() {
    let (_d, cfg) = dir_with(
        GOOD,
        "good.example\n\nnot a name\n||x.example^$third-party\nbad..name\n",
    );
    let (ok, out) = check(&cfg);
    assert!(!ok);
    assert!(out.contains("block.list:3: "), "{out}");
    assert!(out.contains("block.list:4: "), "{out}");
    assert!(out.contains("block.list:5: "), "{out}");
    assert!(!out.contains("block.list:1:"), "{out}");
    assert!(out.contains("3 problem(s)"), "{out}");
}

#[test]
fn guard_refuses_suffix_rules_on_or_above_shared_zones() {
    let (_d, cfg) = dir_with(
        GOOD,
        "*.x.blob.core.windows.net\n*.windows.net\nexact.microsoft.com\n*.microsoft.com\n",
    );
    let (ok, out) = check(&cfg);
    assert!(!ok);
    assert!(
        out.contains("block.list:2: suffix rule *.windows.net"),
        "{out}"
    );
    assert!(
        out.contains("block.list:4: suffix rule *.microsoft.com"),
        "{out}"
    );
    // Below a guarded zone, and exact names, are fine.
    assert!(
        !out.contains("block.list:1:") && !out.contains("block.list:3:"),
        "{out}"
    );
}

#[test]
fn config_mistakes_point_at_their_line() {
    let cases = [
        // (config, expected line, words in the message)
        (
            format!("{GOOD}\n[[groups]]\nname = \"g\"\nenable = [\"nope\"]\n"),
            11,
            "no profile named nope",
        ),
        (format!("{GOOD}bogus_key = 1\n"), 8, "unknown field"),
        (
            "[server]\nlisten = [\"not-an-address\"]\n".to_owned(),
            2,
            "\"not-an-address\" is not an address with a port",
        ),
        (
            "[policy]\nlists_dir = \".\"\n[profiles.p]\nlists = [\"missing.list\"]\n".to_owned(),
            4,
            "cannot read list missing.list: not found in any of ",
        ),
        ("[profiles.p]\nmode = \"ip\"\n".to_owned(), 2, "needs ipv4"),
        (
            "[profiles.p]\nmode = \"sinkhole\"\n".to_owned(),
            2,
            "unknown variant",
        ),
        ("[server\n".to_owned(), 1, ""),
    ];
    for (config, line, words) in cases {
        let (_d, cfg) = dir_with(&config, "a.example\n");
        let (ok, out) = check(&cfg);
        assert!(!ok, "should fail:\n{config}");
        let at = format!("telesink.toml:{line}:");
        assert!(
            out.contains(&at),
            "expected {at} in:\n{out}\nfor:\n{config}"
        );
        assert!(out.contains(words), "expected {words:?} in:\n{out}");
    }
}

#[test]
fn with_skip_invalid_lines_run_loads_valid_entries_and_says_how_many_lines_it_skipped() {
    if !require("knotd") {
        return;
    }
    let knot = Knot::start("");
    let cfg = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nservers = [\"{}\"]\n{}",
        knot.addr,
        GOOD.replace(
            "[policy]\n",
            "[policy]\nallowed_clients = [\"127.0.0.0/8\"]\nskip_invalid_lines = true\n"
        )
    );
    let ts = Telesink::start(
        &cfg,
        &[
            ("guard.list", "microsoft.com\n"),
            ("block.list", "www.test\nbad line\n*.microsoft.com\n"),
        ],
    );
    assert!(ts.wait_log(
        "2 invalid list lines were skipped",
        std::time::Duration::from_secs(2)
    ));
    assert_eq!(
        addrs(&ts.q("www.test", hickory_proto::rr::RecordType::A)),
        ["0.0.0.0"]
    );
}

#[test]
fn profiles_that_block_required_endpoints_warn_when_on() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("config/telesink.toml")).unwrap();
    let d = TempDir::new("warn");
    // Every opt-in profile that targets a Microsoft-marked Required endpoint, switched on.
    let on = shipped.replace(
        "lists_dir = \"../blocklists\"",
        &format!(
            "lists_dir = {:?}",
            root.join("blocklists").display().to_string()
        ),
    ) + "\n[[groups]]\nname = \"default\"\nenable = [\"office-telemetry-strict\", \"office-experimentation\", \"windows-activity\", \"ms-app-analytics\"]\n";
    let cfg = d.write("telesink.toml", &on);
    let (ok, out) = check(&cfg);
    assert!(ok, "{out}");
    for (profile, words) in [
        ("office-telemetry-strict", "cloud save"),
        ("office-experimentation", "Teams/Skype presence"),
        ("windows-activity", "Microsoft 365 Required, ID 156"),
        ("ms-app-analytics", "Application Insights"),
    ] {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("profile {profile} is on:")))
            .unwrap_or_else(|| panic!("no warning for {profile}:\n{out}"));
        assert!(line.contains(words), "{line}");
    }
    // Off by default: the shipped config does not warn about them.
    let (_, plain) = check(&root.join("config/telesink.toml"));
    assert!(!plain.contains("office-telemetry-strict is on"), "{plain}");
}

/// `telesink explain --json` as parsed JSON.
fn explain(cfg: &std::path::Path, name: &str, client: &str) -> serde_json::Value {
    let out = std::process::Command::new(bin())
        .args([
            "explain",
            name,
            "--client",
            client,
            "--json",
            "--offline",
            "--config",
        ])
        .arg(cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// The line the explanation points at really holds the rule it names.
fn assert_points_at_its_rule(e: &serde_json::Value) {
    let rule = &e["rule"];
    let file = rule["file"].as_str().unwrap();
    let line = rule["line"].as_u64().unwrap() as usize;
    let text = std::fs::read_to_string(file).unwrap();
    let at = text.lines().nth(line - 1).unwrap_or("");
    assert!(
        at.trim_start().starts_with(rule["rule"].as_str().unwrap()),
        "{file}:{line} is {at:?}, not {}",
        rule["rule"]
    );
}

#[test]
fn explain_names_the_profile_and_the_file_and_line_that_decided() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = root.join("config/telesink.toml");
    let e = explain(&cfg, "nexus.officeapps.live.com", "127.0.0.1");
    assert_eq!(e["verdict"], "blocked");
    assert_eq!(e["profile"], "office-telemetry");
    assert_eq!(e["rule"]["rule"], "nexus.officeapps.live.com");
    assert_points_at_its_rule(&e);
    // Licensing under the same zone: the allow rule that won is named.
    let e = explain(&cfg, "ols.officeapps.live.com", "127.0.0.1");
    assert_eq!(e["verdict"], "allowed");
    assert_eq!(e["rule"]["allow"], true);
    assert!(
        e["rule"]["file"]
            .as_str()
            .unwrap()
            .ends_with("allow-office-core.domains")
    );
    assert_points_at_its_rule(&e);
    // A suffix rule is shown as written.
    let e = explain(&cfg, "a.b.vortex-win.data.microsoft.com", "127.0.0.1");
    assert_eq!(e["rule"]["rule"], "*.vortex-win.data.microsoft.com");
    assert_points_at_its_rule(&e);
    assert_eq!(
        explain(&cfg, "www.example.org", "127.0.0.1")["verdict"],
        "forwarded"
    );
}

#[test]
fn explain_follows_the_client_group() {
    let (_d, cfg) = dir_with(
        &format!(
            "{GOOD}[profiles.q]\nlists = [\"q.list\"]\n[[groups]]\nname = \"lab\"\nclients = [\"10.1.0.0/16\"]\nenable = [\"q\"]\n"
        ),
        "a.example\n",
    );
    _d.write("q.list", "only-lab.example\n");
    assert_eq!(
        explain(&cfg, "only-lab.example", "10.9.9.9")["verdict"],
        "forwarded"
    );
    let lab = explain(&cfg, "only-lab.example", "10.1.0.9");
    assert_eq!(
        (lab["verdict"].as_str(), lab["group"].as_str()),
        (Some("blocked"), Some("lab"))
    );
}

/// The first profile in the file wins a tie, whatever the names' alphabetical order
/// (the TOML map must keep the file's order).
#[test]
fn profiles_keep_the_order_of_the_file() {
    let (_d, cfg) = dir_with(
        &format!(
            "{GOOD}[profiles.zeta]\nenabled = true\nlists = [\"z.list\"]\n[profiles.alpha]\nenabled = true\nlists = [\"z.list\"]\n"
        ),
        "a.example\n",
    );
    _d.write("z.list", "both.example\n");
    assert_eq!(
        explain(&cfg, "both.example", "127.0.0.1")["profile"],
        "zeta"
    );
}

/// Two profiles whose names differ only in punctuation got the same nftables set names
/// (`cidr_a_b_4`) and silently shared one set; that is now refused at the second profile.
#[test]
fn profiles_that_would_share_nftables_set_names_are_refused() {
    let config = format!(
        "{GOOD}\n[profiles.a-b]\nlists = [\"block.list\"]\n\n[profiles.a_b]\nlists = [\"block.list\"]\n"
    );
    let line = config.lines().position(|l| l == "[profiles.a_b]").unwrap() + 1;
    let (_d, cfg) = dir_with(&config, "a.example\n");
    let (ok, out) = check(&cfg);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "telesink.toml:{line}: profiles a-b and a_b would get the same nftables set names"
        )),
        "{out}"
    );
}

/// A lookup keeps at most 8 rules per name; a ninth used to be dropped without a word.
/// Now the rule that goes over is refused with its file:line.
#[test]
fn a_name_with_more_rules_than_a_lookup_keeps_is_refused() {
    let mut config = String::from(GOOD);
    let d = TempDir::new("crowded");
    d.write("guard.list", "microsoft.com\n");
    d.write("block.list", "a.example\n");
    for i in 0..5 {
        d.write(&format!("l{i}.list"), "x.example\n*.x.example\n");
        config.push_str(&format!("\n[profiles.q{i}]\nlists = [\"l{i}.list\"]\n"));
    }
    let cfg = d.write("telesink.toml", &config);
    let (ok, out) = check(&cfg);
    assert!(!ok, "{out}");
    assert!(
        out.contains("l4.list:1: x.example has 10 rules across the lists, more than the 8"),
        "{out}"
    );
}

/// `explain` used to say "no rule matches" when a profile that is off would block the
/// name, "blocked" for a client that gets REFUSED, and accepted anything as a name.
#[test]
fn explain_tells_the_whole_truth() {
    let (d, cfg) = dir_with(
        &format!(
            "{GOOD}[profiles.q]\nlists = [\"q.list\"]\n[profiles.r]\nlists = [\"q.list\"]\n[[groups]]\nname = \"lab\"\nclients = [\"192.0.2.0/24\"]\nenable = [\"q\"]\n"
        ),
        "a.example\n",
    );
    d.write("q.list", "only-lab.example\n");
    // Off for the default group (on for lab), and off everywhere.
    let e = explain(&cfg, "only-lab.example", "10.1.2.3");
    assert_eq!(e["verdict"], "forwarded", "{e}");
    let why: Vec<(String, String)> = e["would_block"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["profile"].as_str().unwrap().to_owned(),
                w["why_not"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        why,
        [
            ("q".to_owned(), "off for group default".to_owned()),
            ("r".to_owned(), "off".to_owned())
        ],
        "{e}"
    );
    // The human output says it too.
    let out = std::process::Command::new(bin())
        .args([
            "explain",
            "only-lab.example",
            "--client",
            "10.1.2.3",
            "--offline",
            "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("profile q would block it (only-lab.example at ")
            && text.contains("but is off for group default"),
        "{text}"
    );
    // A client outside allowed_clients gets REFUSED, whatever the lists say.
    let e = explain(&cfg, "a.example", "203.0.113.5");
    assert!(e["verdict"].as_str().unwrap().starts_with("refused"), "{e}");
    // Not a name: a clear error, no verdict.
    for bad in ["not a name!", "a..b", "x y.example"] {
        let out = std::process::Command::new(bin())
            .args(["explain", bad, "--offline", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad:?} was explained");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not a domain name"), "{err}");
    }
}

/// `check` warns about every Microsoft 365 Required name that a profile which is on would
/// block, unless the profile's warning names it; the shipped configs explain all theirs.
#[test]
fn check_warns_about_required_names_a_profile_blocks() {
    let config = GOOD.replace(
        "guard = \"guard.list\"\n",
        "guard = \"guard.list\"\nrequired = \"required.list\"\n",
    );
    let (d, cfg) = dir_with(&config, "c1.microsoft.com\na.example\n");
    d.write(
        "required.list",
        "# Required\nc1.microsoft.com  # ID70\n*.auth.example\n",
    );
    let (ok, out) = check(&cfg);
    assert!(ok, "a warning, not an error: {out}");
    assert!(
        out.contains(
            "profile p is on and blocks c1.microsoft.com, which Microsoft 365 marks Required"
        ) && out.contains("required.list:2"),
        "{out}"
    );
    assert!(!out.contains("auth.example"), "{out}");
    // Named in the profile's warning: intended, not warned about again.
    let named = config.replace(
        "lists = [\"block.list\"]\n",
        "lists = [\"block.list\"]\nwarning = \"blocks c1.microsoft.com (support resources)\"\n",
    );
    let cfg = d.write("telesink.toml", &named);
    let (ok, out) = check(&cfg);
    assert!(ok && !out.contains("marks Required"), "{out}");
    // The shipped configs: none unexplained.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["config/telesink.toml", "config/gateway.toml"] {
        let (ok, out) = check(&root.join(name));
        assert!(ok && !out.contains("marks Required"), "{name}: {out}");
    }
}

/// Address values that do not parse are quoted with the fix, at their file:line.
#[test]
fn address_mistakes_are_quoted_with_the_fix() {
    let groups = "[[groups]]\nname = \"lab\"\nclients = [\"10.1.2.3/16\"]\n";
    for (config, want) in [
        (
            format!("[upstream]\nservers = [\"8.8.8.8\"]\n{GOOD}"),
            "has no port: write \"8.8.8.8:53\"",
        ),
        (
            GOOD.replace(
                "[policy]\n",
                "[policy]\nallowed_clients = [\"10.0.0.0/33\"]\n",
            ),
            "prefix length 33 > 32",
        ),
        (
            format!("{GOOD}{groups}"),
            "has host bits set: write \"10.1.0.0/16\"",
        ),
    ] {
        let (_d, cfg) = dir_with(&config, "a.example\n");
        let (ok, out) = check(&cfg);
        assert!(!ok, "{config}: {out}");
        assert!(out.contains(want), "{config}: {out}");
        assert!(out.contains("telesink.toml:"), "no file:line: {out}");
    }
}

/// Settings that parse but almost certainly are not meant get a warning from `check`.
#[test]
fn check_warns_about_settings_that_do_nothing() {
    for (extra, want) in [
        (
            "[firewall]\nenabled = true\n",
            "firewall.lan names no interface",
        ),
        (
            "[firewall]\nenabled = true\nlan = [\"nosuchif0\"]\n",
            "firewall interface nosuchif0 does not exist",
        ),
        ("[upstream]\ntimeout_ms = 0\n", "upstream.timeout_ms = 0"),
    ] {
        let (_d, cfg) = dir_with(&format!("{GOOD}{extra}"), "a.example\n");
        let (ok, out) = check(&cfg);
        assert!(ok, "a warning, not an error: {out}");
        let line = out.lines().find(|l| l.contains(want));
        assert!(
            line.is_some_and(|l| l.starts_with("warning: ")),
            "{extra}: {out}"
        );
    }
}

/// Problems come in file order (the files as the config names them, each top to
/// bottom), with paths as an admin writes them, and `--json` gives the same for scripts.
#[test]
fn check_lists_problems_in_file_order_and_as_json() {
    let (d, cfg) = dir_with(
        &GOOD.replace(
            "lists = [\"block.list\"]",
            "lists = [\"block.list\", \"a.list\"]",
        ),
        "*.microsoft.com\nbad name\nok.example\n",
    );
    d.write("a.list", "bad one\ny.example\n");
    let (ok, out) = check(&cfg);
    assert!(!ok);
    let order: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split(": ").next())
        .filter(|l| l.contains(".list:"))
        .collect();
    let names: Vec<String> = order
        .iter()
        .map(|l| l.rsplit('/').next().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["block.list:1", "block.list:2", "a.list:1"], "{out}");
    assert!(!out.contains("/./"), "{out}");
    let json = std::process::Command::new(bin())
        .args(["check", "--json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!json.status.success());
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let lines: Vec<u64> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [1, 2, 1], "{v}");
}

/// A control.socket_group that does not exist failed only at `run`; `check` says so too.
#[test]
fn a_missing_socket_group_fails_check() {
    let (_d, cfg) = dir_with(
        &format!("{GOOD}[control]\nsocket_group = \"no-such-group-ts\"\n"),
        "a.example\n",
    );
    let (ok, out) = check(&cfg);
    assert!(!ok, "{out}");
    assert!(
        out.contains("telesink.toml:9: control.socket_group: no group named no-such-group-ts"),
        "{out}"
    );
}

#[test]
fn devices_are_checked_with_file_and_line_and_the_fix() {
    let config = format!(
        "{GOOD}\n[identity]\nlease_files = [\"relative.leases\"]\n\n[[devices]]\nname = \"laptop\"\nmacs = [\"02:00:5e:10:00:01\", \"not-a-mac\"]\n\n[[devices]]\nname = \"other\"\nmacs = [\"02-00-5E-10-00-01\"]\n\n[[devices]]\nname = \"empty\"\n"
    );
    let (_d, cfg) = dir_with(&config, "a.example\n");
    let (ok, out) = check(&cfg);
    assert!(!ok, "{out}");
    // The bad MAC at its line, with the spelling that works.
    assert!(
        out.contains("telesink.toml:14: device laptop: \"not-a-mac\" is not a MAC address; write it as aa:bb:cc:dd:ee:ff"),
        "{out}"
    );
    // One MAC for two devices (any spelling), a device with neither MACs nor addresses,
    // a relative lease file.
    assert!(
        out.contains("MAC 02:00:5e:10:00:01 names two devices: laptop and other"),
        "{out}"
    );
    assert!(out.contains("device empty: give macs"), "{out}");
    assert!(
        out.contains("lease file relative.leases: give an absolute path"),
        "{out}"
    );
}
