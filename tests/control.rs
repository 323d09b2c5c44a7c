//! The control plane, end to end: the real daemon, its Unix socket, the real CLI, a real
//! knotd upstream, and queries that show each change (or its absence) in the answers.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::control::*;
use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

fn metrics(ts: &Telesink) -> String {
    let log = ts.log_text();
    let addr: SocketAddr = log
        .lines()
        .find_map(|l| l.split("metrics listening on ").nth(1)?.trim().parse().ok())
        .expect("metrics address in the log");
    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("http://{addr}/metrics")])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_group_toggle_changes_answers_for_that_group_only_and_survives_a_restart() {
    let Some((_knot, ts)) = start("", &[]) else {
        return;
    };
    assert_eq!(rcode(&ts, "127.0.0.1", TELE), ResponseCode::NXDomain);
    assert_eq!(rcode(&ts, "127.0.0.2", TELE), ResponseCode::NXDomain);

    let out = ok(&ts, &["profile", "disable", "tele", "--group", "finance"]);
    assert!(out.contains("tele for group finance: on -> off"), "{out}");
    assert_eq!(rcode(&ts, "127.0.0.2", TELE), ResponseCode::NoError);
    assert_eq!(rcode(&ts, "127.0.0.3", TELE), ResponseCode::NoError);
    assert_eq!(rcode(&ts, "127.0.0.1", TELE), ResponseCode::NXDomain);
    let state = std::fs::read_to_string(ts.dir.path().join("state.json")).unwrap();
    assert!(state.contains("\"finance\""), "{state}");

    let ts = restart(ts, &[]);
    assert_eq!(rcode(&ts, "127.0.0.2", TELE), ResponseCode::NoError);
    assert_eq!(rcode(&ts, "127.0.0.1", TELE), ResponseCode::NXDomain);
    let status = json(&ts, &["status"]);
    assert_eq!(status["toggles"].as_array().unwrap().len(), 1, "{status}");
    let finance = &status["groups"][1];
    assert_eq!(finance["group"], "finance");
    assert!(
        !finance["on"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "tele")
    );

    // Enabling again for the group puts it back; the global default is untouched.
    ok(&ts, &["profile", "enable", "tele", "--group", "finance"]);
    assert_eq!(rcode(&ts, "127.0.0.2", TELE), ResponseCode::NXDomain);
}

#[test]
fn a_timed_disable_reverts_by_itself() {
    let Some((_knot, ts)) = start("", &[]) else {
        return;
    };
    let asked = Instant::now();
    ok(&ts, &["profile", "disable", "tele", "--for", "2s"]);
    assert_eq!(rcode(&ts, "127.0.0.1", TELE), ResponseCode::NoError);
    let profiles = json(&ts, &["profiles"]);
    let tele = profiles
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "tele")
        .unwrap();
    let until = tele["toggles"][0]["until"].as_u64().unwrap();
    assert!(until > 0);
    let mut reverted = None;
    while asked.elapsed() < Duration::from_secs(10) {
        if rcode(&ts, "127.0.0.1", TELE) == ResponseCode::NXDomain {
            reverted = Some(asked.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let reverted = reverted.expect("the timed disable never reverted");
    // Whole seconds: the toggle lapses at the next second boundary after 2 s.
    assert!(
        reverted >= Duration::from_secs(1),
        "reverted after {reverted:?}"
    );
    assert!(ts.wait_log("timed toggle lapsed", Duration::from_secs(2)));
    let state = std::fs::read_to_string(ts.dir.path().join("state.json")).unwrap();
    assert!(
        !state.contains("\"tele\""),
        "the lapsed toggle is still saved: {state}"
    );
}

#[test]
fn a_dry_run_reports_names_cidrs_and_clients_and_changes_nothing() {
    let Some((_knot, ts)) = start("", &[]) else {
        return;
    };
    let report = json(&ts, &["profile", "enable", "ads", "--dry-run"]);
    assert_eq!(report["dry_run"], true);
    let changes = report["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{report}");
    for c in changes {
        assert_eq!(c["profile"], "ads");
        assert_eq!(
            (c["from"].as_str(), c["to"].as_str()),
            (Some("off"), Some("on"))
        );
        assert_eq!(c["names"], 3);
        assert_eq!(c["cidrs"], 0);
    }
    let finance = changes.iter().find(|c| c["group"] == "finance").unwrap();
    let clients: Vec<&str> = finance["clients"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert_eq!(clients, ["127.0.0.2/32", "reception-pc (127.0.0.3)"]);
    assert_eq!(rcode(&ts, "127.0.0.1", ADS), ResponseCode::NoError);
    assert!(!ts.dir.path().join("state.json").exists());
    assert_eq!(json(&ts, &["status"])["generation"], 1);

    let out = ok(&ts, &["profile", "enable", "ads"]);
    assert!(out.contains("live as generation 2"), "{out}");
    let m = ts.q_from("127.0.0.1", ADS, RecordType::A);
    assert_eq!(addrs(&m), ["0.0.0.0"]);
}

#[test]
fn log_only_answers_normally_and_counts_would_be_blocks() {
    let Some((_knot, ts)) = start("", &["--metrics", "127.0.0.1:0"]) else {
        return;
    };
    ok(&ts, &["log-only", "tele", "on"]);
    let m = ts.q_from("127.0.0.1", TELE, RecordType::A);
    assert_eq!(addrs(&m), ["203.0.113.1"]);
    ts.q_from("127.0.0.3", "x.more.tele.test", RecordType::A);
    let text = metrics(&ts);
    assert!(
        text.contains("telesink_dns_logged_total{client=\"127.0.0.1\",profile=\"tele\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("telesink_dns_logged_total{client=\"reception-pc\",profile=\"tele\"} 1"),
        "{text}"
    );
    assert!(!text.contains("telesink_dns_blocked_total{"), "{text}");
    let explained = ok(&ts, &["explain", TELE]);
    assert!(
        explained.contains("log-only: profile tele would block it"),
        "{explained}"
    );

    ok(&ts, &["log-only", "tele", "off"]);
    assert_eq!(rcode(&ts, "127.0.0.1", TELE), ResponseCode::NXDomain);
}

#[test]
fn a_bad_reload_is_refused_with_file_line_and_the_old_policy_keeps_serving() {
    let Some((knot, ts)) = start("", &["--metrics", "127.0.0.1:0"]) else {
        return;
    };
    let cfg = ts.dir.path().join("telesink.toml");
    let good = std::fs::read_to_string(&cfg).unwrap();
    ok(&ts, &["profile", "disable", "tele", "--group", "finance"]);

    std::fs::write(&cfg, format!("{good}[metrics]\nmax_clients = \"many\"\n")).unwrap();
    let line = good.lines().count() + 2;
    let (success, out, err) = ts.ctl(&["reload"]);
    assert!(!success, "a broken config reloaded: {out}");
    assert!(err.contains(&format!("telesink.toml:{line}")), "{err}");
    assert_eq!(rcode(&ts, "127.0.0.1", TELE), ResponseCode::NXDomain);
    assert_eq!(rcode(&ts, "127.0.0.2", TELE), ResponseCode::NoError);
    assert!(metrics(&ts).contains("telesink_reloads_total{result=\"failure\"} 1"));

    // A good reload picks up a list change and keeps the runtime toggle.
    std::fs::write(&cfg, config(&knot, "")).unwrap();
    ts.dir
        .write("tele.list", &format!("{TELE}\nnew.tele.test\n"));
    let out = ok(&ts, &["reload"]);
    assert!(out.contains("live as generation"), "{out}");
    assert_eq!(
        rcode(&ts, "127.0.0.1", "new.tele.test"),
        ResponseCode::NXDomain
    );
    assert_eq!(rcode(&ts, "127.0.0.2", TELE), ResponseCode::NoError);
}

#[test]
fn unknown_profiles_and_groups_are_refused_and_change_nothing() {
    let Some((_knot, ts)) = start("", &[]) else {
        return;
    };
    let (success, _, err) = ts.ctl(&["profile", "disable", "nope"]);
    assert!(!success);
    assert!(err.contains("no profile named nope"), "{err}");
    let (success, _, err) = ts.ctl(&["profile", "disable", "tele", "--group", "nope"]);
    assert!(!success);
    assert!(err.contains("no group named nope"), "{err}");
    assert_eq!(json(&ts, &["status"])["generation"], 1);
    assert!(!ts.dir.path().join("state.json").exists());
}

#[test]
fn a_corrupt_state_file_is_set_aside_and_the_config_applies() {
    let Some((_knot, ts)) = start("", &[]) else {
        return;
    };
    ok(&ts, &["profile", "disable", "tele"]);
    let dir = ts.stop();
    std::fs::write(
        dir.path().join("state.json"),
        "{\"version\": 1, \"toggles\": [",
    )
    .unwrap();
    let cfg = dir.path().join("telesink.toml");
    let ts = Telesink::start_with(dir, &cfg, &[]);
    assert_eq!(rcode(&ts, "127.0.0.1", TELE), ResponseCode::NXDomain);
    assert!(ts.wait_log("is unreadable", Duration::from_secs(1)));
    let aside = std::fs::read_dir(ts.dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.corrupt-")
        });
    assert!(aside, "the corrupt state file was not kept aside");
}

#[test]
fn pseudonymous_labels_hide_addresses_and_stay_stable_across_restarts() {
    let extra = "[metrics]\nclient_labels = \"pseudonym\"\n";
    let Some((_knot, ts)) = start(extra, &["--metrics", "127.0.0.1:0"]) else {
        return;
    };
    for from in ["127.0.0.1", "127.0.0.3"] {
        assert_eq!(rcode(&ts, from, TELE), ResponseCode::NXDomain);
    }
    let label = |text: &str| -> String {
        let line = text
            .lines()
            .find(|l| l.starts_with("telesink_dns_blocked_total{client=\"h-"))
            .unwrap_or_else(|| panic!("no pseudonymous series:\n{text}"));
        line.split('"').nth(1).unwrap().to_owned()
    };
    let text = metrics(&ts);
    assert!(
        !text.contains("client=\"127.0.0.1\""),
        "an address leaked:\n{text}"
    );
    assert!(text.contains("client=\"reception-pc\""), "{text}");
    let first = label(&text);
    assert_eq!(first.len(), 2 + 16);

    let ts = restart(ts, &["--metrics", "127.0.0.1:0"]);
    rcode(&ts, "127.0.0.1", TELE);
    assert_eq!(label(&metrics(&ts)), first);
}

/// Root only: another user, in and out of the socket's group.
#[test]
fn the_socket_refuses_a_user_outside_its_group() {
    if !netns::require_root() {
        return;
    }
    let extra = "[control]\nsocket_group = \"4242\"\n";
    let Some((_knot, ts)) = start(extra, &[]) else {
        return;
    };
    let sock = ts.dir.path().join("control.sock");
    let as_nobody = |groups: &str| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", groups, "--"])
            .arg(bin())
            .args(["status", "--socket"])
            .arg(&sock)
            .output()
            .expect("setpriv")
    };
    let refused = as_nobody("--clear-groups");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("Permission denied"), "{err}");
    let member = as_nobody("--groups=4242");
    assert!(
        member.status.success(),
        "{}",
        String::from_utf8_lossy(&member.stderr)
    );
    let meta = std::fs::metadata(&sock).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), 4242);
}

/// Toggles and reloads while dnsperf sends a steady stream: nothing lost or late (dnsperf
/// counts an answer after its 1 s timeout as lost), and the answers change with the toggle.
#[test]
fn toggles_and_reloads_under_load_lose_no_query() {
    if !require("dnsperf") {
        return;
    }
    let Some((_knot, ts)) = start("", &[]) else {
        return;
    };
    let queries = ts.dir.write("queries", &format!("{TELE} A\n"));
    let server = ts.udp;
    let perf = std::thread::spawn(move || {
        std::process::Command::new("dnsperf")
            .args([
                "-s",
                &server.ip().to_string(),
                "-p",
                &server.port().to_string(),
            ])
            .args(["-d", queries.to_str().unwrap()])
            .args(["-l", "5", "-Q", "2000", "-t", "1", "-c", "4"])
            .output()
            .expect("dnsperf")
    });
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..8 {
        let action = if i % 2 == 0 { "disable" } else { "enable" };
        ok(&ts, &["profile", action, "tele"]);
        std::thread::sleep(Duration::from_millis(250));
        if i % 4 == 3 {
            ok(&ts, &["reload"]);
        }
    }
    let out = perf.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in dnsperf output:\n{text}"))
    };
    assert!(field("Queries sent:") > 5000, "{text}");
    assert_eq!(field("Queries lost:"), 0, "{text}");
    assert!(text.contains("NXDOMAIN"), "never blocked:\n{text}");
    assert!(
        text.contains("NOERROR"),
        "never forwarded after a toggle:\n{text}"
    );
}

/// A change that cannot be saved is refused whole: the caller gets the error and DNS keeps
/// the old answers. Here the state file's path is a folder, so the rename of the written
/// temporary copy fails.
#[test]
fn a_change_that_cannot_be_saved_changes_nothing() {
    let Some((_knot, ts)) = start("[control]\nstate_file = \"{dir}/state.d\"\n", &[]) else {
        return;
    };
    std::fs::create_dir(ts.dir.path().join("state.d")).unwrap();
    let (success, out, err) = ts.ctl(&["profile", "disable", "tele"]);
    assert!(
        !success,
        "a change that could not be saved was reported done: {out}"
    );
    assert!(err.contains("nothing changed"), "{err}");
    assert_eq!(rcode(&ts, "127.0.0.1", TELE), ResponseCode::NXDomain);
    assert_eq!(json(&ts, &["status"])["generation"], 1);
    let leftovers: Vec<String> = std::fs::read_dir(ts.dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary state left behind: {leftovers:?}"
    );
}

/// Runs a second `telesink run` on the same folder and config; (success, stderr).
fn run_again(ts: &Telesink) -> (bool, String) {
    let mut child = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(ts.dir.path().join("telesink.toml"))
        .env("RUNTIME_DIRECTORY", ts.dir.path())
        .env("STATE_DIRECTORY", ts.dir.path())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run telesink");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.success(), err);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the second telesink did not exit within 10 s");
}

/// Start, `check` and reload accept and refuse the same list lines: a line `check`
/// refuses is refused by reload (the old policy keeps serving) and by a start, with its
/// file:line; `skip_invalid_lines = true` makes it a counted warning for all three.
#[test]
fn start_check_and_reload_refuse_the_same_list_line() {
    let Some((knot, ts)) = start("", &[]) else {
        return;
    };
    ts.dir
        .write("tele.list", &format!("{TELE}\nnew.tele.test\nnot a name\n"));
    let (success, out, err) = ts.ctl(&["reload"]);
    assert!(!success, "reload accepted a line check refuses: {out}");
    assert!(err.contains("tele.list:3"), "{err}");
    assert_eq!(
        rcode(&ts, "127.0.0.1", "new.tele.test"),
        ResponseCode::NoError,
        "the refused reload changed the policy"
    );
    let cfg = ts.dir.path().join("telesink.toml");
    let (checked, text) = check(&cfg);
    assert!(!checked && text.contains("tele.list:3"), "{text}");
    let (started, err) = run_again_after_stop(ts);
    assert!(!started && err.contains("tele.list:3"), "{err}");

    let dir = TempDir::new("skiplines");
    dir.write("tele.list", &format!("{TELE}\nnew.tele.test\nnot a name\n"));
    dir.write("ads.list", &format!("{ADS}\n"));
    let cfg = dir.write(
        "telesink.toml",
        &config(&knot, "").replace(
            "lists_dir = \".\"",
            "lists_dir = \".\"\nskip_invalid_lines = true",
        ),
    );
    let (checked, text) = check(&cfg);
    assert!(checked && text.contains("tele.list:3"), "{text}");
    let ts = Telesink::start_with(dir, &cfg, &[]);
    assert_eq!(
        rcode(&ts, "127.0.0.1", "new.tele.test"),
        ResponseCode::NXDomain
    );
    let out = ok(&ts, &["reload"]);
    assert!(out.contains("live as generation"), "{out}");
}

/// Stops the daemon, then starts it again on the same folder: (started, log).
fn run_again_after_stop(ts: Telesink) -> (bool, String) {
    let dir = ts.stop();
    let mut child = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(dir.path().join("telesink.toml"))
        .env("RUNTIME_DIRECTORY", dir.path())
        .env("STATE_DIRECTORY", dir.path())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run telesink");
    let mut err = String::new();
    use std::io::{BufRead, BufReader};
    for line in BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        err.push_str(&line);
        err.push('\n');
        if line.ends_with("ready") {
            let _ = child.kill();
            let _ = child.wait();
            return (true, err);
        }
    }
    (child.wait().unwrap().success(), err)
}

/// A list of an enabled profile that has no entries (emptied by a failed download, a
/// truncated copy) silently stopped that profile. It is now a problem everywhere, unless
/// the profile says its lists may be empty.
#[test]
fn an_empty_list_of_an_enabled_profile_is_refused_unless_allowed() {
    let Some((knot, ts)) = start("", &[]) else {
        return;
    };
    ts.dir.write("tele.list", "");
    let (success, out, err) = ts.ctl(&["reload"]);
    assert!(!success, "an emptied list was accepted: {out}");
    assert!(
        err.contains("tele.list") && err.contains("no entries"),
        "{err}"
    );
    assert_eq!(rcode(&ts, "127.0.0.1", TELE), ResponseCode::NXDomain);
    let cfg = ts.dir.path().join("telesink.toml");
    let (checked, text) = check(&cfg);
    assert!(!checked && text.contains("no entries"), "{text}");
    std::fs::write(
        &cfg,
        config(&knot, "").replace(
            "lists = [\"tele.list\"]",
            "lists = [\"tele.list\"]\nallow_empty_lists = true",
        ),
    )
    .unwrap();
    let (checked, text) = check(&cfg);
    assert!(checked, "{text}");
    ok(&ts, &["reload"]);
    assert_eq!(rcode(&ts, "127.0.0.1", TELE), ResponseCode::NoError);
}

/// A second daemon on the same control socket refuses before it touches the socket, the
/// state file or the kernel: the first stays reachable.
#[test]
fn a_second_run_refuses_and_leaves_the_first_reachable() {
    let Some((_knot, ts)) = start("", &[]) else {
        return;
    };
    use std::os::unix::fs::MetadataExt;
    let sock = ts.dir.path().join("control.sock");
    let inode = std::fs::metadata(&sock).unwrap().ino();
    let (started, err) = run_again(&ts);
    assert!(!started, "a second daemon started:\n{err}");
    assert!(err.contains("already running"), "{err}");
    assert_eq!(std::fs::metadata(&sock).unwrap().ino(), inode);
    ok(&ts, &["status"]);
    assert_eq!(rcode(&ts, "127.0.0.1", TELE), ResponseCode::NXDomain);
}

/// `log-only` on a profile that is off used to print "no profile changes state" and do
/// nothing. It now observes the profile (answers unchanged, would-be blocks counted per
/// client), for one group with --group, for a while with --for, and status lists it.
#[test]
fn log_only_observes_a_profile_that_is_off_per_group_and_for_a_while() {
    let Some((_knot, ts)) = start("", &["--metrics", "127.0.0.1:0"]) else {
        return;
    };
    // ads is off by default; observe it for the finance group only.
    let out = ok(&ts, &["log-only", "ads", "on", "--group", "finance"]);
    assert!(
        out.contains("ads for group finance: off -> log-only"),
        "{out}"
    );
    assert_eq!(rcode(&ts, "127.0.0.2", ADS), ResponseCode::NoError);
    assert_eq!(rcode(&ts, "127.0.0.1", ADS), ResponseCode::NoError);
    let text = metrics(&ts);
    assert!(
        text.contains("telesink_dns_logged_total{client=\"127.0.0.2\",profile=\"ads\"} 1"),
        "{text}"
    );
    assert!(
        !text.contains("telesink_dns_logged_total{client=\"127.0.0.1\",profile=\"ads\"}"),
        "{text}"
    );
    let status = json(&ts, &["status"]);
    let finance = &status["groups"][1];
    assert_eq!(finance["group"], "finance");
    assert!(
        finance["log_only"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "ads"),
        "{status}"
    );
    // Everywhere, for 2 s: it lapses by itself, back to off (and finance's entry stays).
    let out = ok(&ts, &["log-only", "ads", "on", "--for", "2s"]);
    assert!(
        out.contains("ads for group default: off -> log-only"),
        "{out}"
    );
    std::thread::sleep(Duration::from_millis(3200));
    let status = json(&ts, &["status"]);
    assert!(
        !status["groups"][0]["log_only"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "ads"),
        "{status}"
    );
    // Never blocking, whatever it observes.
    assert_eq!(rcode(&ts, "127.0.0.2", ADS), ResponseCode::NoError);
}

/// A state file that is not UTF-8 used to make the start log an error and keep the file
/// (the README promises any corrupt file is moved aside); temporary state files a killed
/// daemon left behind used to stay forever.
#[test]
fn a_non_utf8_state_file_is_set_aside_and_stale_temporaries_are_removed() {
    let Some((_knot, ts)) = start("", &[]) else {
        return;
    };
    let dir = ts.stop();
    std::fs::write(dir.path().join("state.json"), [0xff, 0xfe, b'{', 0x80]).unwrap();
    std::fs::write(dir.path().join("state.tmp-424242"), "{}").unwrap();
    let cfg = dir.path().join("telesink.toml");
    let ts = Telesink::start_with(dir, &cfg, &[]);
    assert_eq!(rcode(&ts, "127.0.0.1", TELE), ResponseCode::NXDomain);
    assert!(
        ts.wait_log("is unreadable (not UTF-8)", Duration::from_secs(1)),
        "{}",
        ts.log_text()
    );
    let names: Vec<String> = std::fs::read_dir(ts.dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("state.corrupt-")),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.starts_with("state.tmp-")),
        "{names:?}"
    );
}

/// Changes are logged in words with who made them, and a reload says which toggles it
/// keeps (not Rust's Debug syntax).
#[test]
fn changes_and_kept_toggles_are_logged_in_words() {
    let Some((_knot, ts)) = start("", &[]) else {
        return;
    };
    ok(
        &ts,
        &[
            "profile", "disable", "tele", "--group", "finance", "--for", "2h",
        ],
    );
    ok(&ts, &["reload"]);
    // The log reaches the test through a pipe and a reading thread: wait for the line.
    assert!(ts.wait_log(
        "runtime toggle kept across the reload",
        Duration::from_secs(5)
    ));
    let log = ts.log_text();
    let uid = own_uid();
    assert!(
        log.contains(
            "change requested over the control socket: profile tele off for group finance until "
        ) && log.contains(&format!("by uid {uid}")),
        "{log}"
    );
    assert!(
        log.contains(
            "runtime toggle kept across the reload: profile tele off for group finance until"
        ),
        "{log}"
    );
    assert!(
        !log.contains("Profile(Toggle"),
        "Debug syntax in the log:\n{log}"
    );
}

/// The uid this test runs as, from /proc (no libc call).
fn own_uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .to_owned()
}

/// With a custom control socket named in a config that no longer parses, `reload` and
/// `status` used to say only "cannot reach telesink"; they now print the parse error.
#[test]
fn a_config_that_does_not_parse_is_named_when_the_socket_cannot_be_found() {
    let dir = TempDir::new("brokencfg");
    let cfg = dir.write(
        "telesink.toml",
        "[control]\nsocket = \"/nonexistent/telesink.sock\"\n[server\n",
    );
    let out = std::process::Command::new(bin())
        .args(["status", "--config"])
        .arg(&cfg)
        .env_remove("TELESINK_SOCKET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not parse") && err.contains("telesink.toml:3"),
        "{err}"
    );
}

/// Idle connections to the control socket used to block every command for 30 s (8
/// slots). They are now evicted, oldest first, for the admin's command.
#[test]
fn status_works_while_idle_connections_hold_the_control_socket() {
    let Some((_knot, ts)) = start("", &[]) else {
        return;
    };
    let sock = ts.dir.path().join("control.sock");
    let idle: Vec<std::os::unix::net::UnixStream> = (0..40)
        .filter_map(|_| std::os::unix::net::UnixStream::connect(&sock).ok())
        .collect();
    assert!(idle.len() >= 30, "only {} connections opened", idle.len());
    let started = Instant::now();
    for _ in 0..3 {
        ok(&ts, &["status"]);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "status took {:?}",
        started.elapsed()
    );
    drop(idle);
}
