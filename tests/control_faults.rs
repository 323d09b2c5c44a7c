//! The control plane where the security review found it lacking, against the real
//! daemon: a timed toggle over a standing one, a timed revert while the state folder
//! cannot be written, a state file with a million runtime rules (and one that no CLI
//! would accept), and control clients that send their request slowly.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::control::*;
use common::*;
use hickory_proto::op::ResponseCode;

fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `profile enable ads` (off in the config), then `profile disable ads --for 2s`: while
/// the timed one stands ads is off; when it lapses the standing "on" is back, in the
/// answers and in the state file.
#[test]
fn a_timed_toggle_stacks_on_the_standing_one() {
    let Some((_knot, ts)) = start("", &[]) else {
        return;
    };
    ok(&ts, &["profile", "enable", "ads"]);
    assert_eq!(rcode(&ts, "127.0.0.1", ADS), ResponseCode::NoError);
    let blocked = |ts: &Telesink| {
        addrs(&ts.q_from("127.0.0.1", ADS, hickory_proto::rr::RecordType::A)) == ["0.0.0.0"]
    };
    assert!(blocked(&ts));
    ok(&ts, &["profile", "disable", "ads", "--for", "2s"]);
    assert!(!blocked(&ts));
    let toggles = json(&ts, &["status"])["toggles"].clone();
    assert_eq!(toggles.as_array().unwrap().len(), 2, "{toggles}");
    wait_until("the revert", Duration::from_secs(10), || blocked(&ts));
    let state = std::fs::read_to_string(ts.dir.path().join("state.json")).unwrap();
    let mut saved: serde_json::Value = serde_json::from_str(&state).unwrap();
    // Who made it is kept with it ("uid 0 on <host>").
    let by = saved["toggles"]["profiles"][0]["by"].take();
    assert!(
        by.as_str().is_some_and(|b| b.starts_with("uid ")),
        "{state}"
    );
    saved["toggles"]["profiles"][0]
        .as_object_mut()
        .unwrap()
        .remove("by");
    assert_eq!(
        saved["toggles"]["profiles"],
        serde_json::json!([{"profile": "ads", "group": null, "enabled": true, "until": null}]),
        "{state}"
    );
}

/// A timed revert is due while the state folder cannot be written: it is applied all the
/// same, /health and status say it is not saved, and it is saved once the folder can be
/// written again.
#[test]
fn a_revert_that_cannot_be_saved_is_applied_and_reported() {
    if !require("chattr") {
        return;
    }
    let port = free_port();
    let extra = format!(
        "[control]\nstate_file = \"{{dir}}/state/state.json\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
    );
    let Some((_knot, ts)) = start(&extra, &[]) else {
        return;
    };
    let metrics = format!("127.0.0.1:{port}").parse().unwrap();
    let folder = ts.dir.path().join("state");
    ok(&ts, &["profile", "disable", "tele", "--for", "2s"]);
    assert_eq!(rcode(&ts, "127.0.0.1", TELE), ResponseCode::NoError);
    let lock = Immutable::set(&folder);
    wait_until("the revert", Duration::from_secs(10), || {
        rcode(&ts, "127.0.0.1", TELE) == ResponseCode::NXDomain
    });
    let (status, body) = get(metrics, "/health");
    let text = ok(&ts, &["status"]);
    drop(lock);
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("the toggles in force are not saved"),
        "{body}"
    );
    assert!(text.contains("NOT SAVED"), "{text}");
    // Saved by the retry once the folder can be written.
    wait_until("the retry to save", Duration::from_secs(15), || {
        get(metrics, "/health").0 == 200
    });
    let state = std::fs::read_to_string(folder.join("state.json")).unwrap();
    assert!(!state.contains("\"tele\""), "{state}");
    assert!(!ok(&ts, &["status"]).contains("NOT SAVED"));
}

/// A state file with a million runtime rules and one named "bad name!": the bad one is
/// dropped, the first 10,000 (the default max_runtime_rules) restored and the rest said
/// and counted; toggles stay quick, one more rule is refused with the way out, and the
/// stop completes within the unit's TimeoutStopSec (10 s).
#[test]
fn a_huge_state_file_is_capped_and_the_daemon_stays_responsive() {
    if !require("knotd") {
        return;
    }
    let knot = Knot::start_zones(&[(".", ROOT_WILDCARD)]);
    let dir = TempDir::new("control-huge");
    dir.write("tele.list", &format!("{TELE}\n"));
    dir.write("ads.list", &format!("{ADS}\n"));
    let cfg = dir.write("telesink.toml", &config(&knot, ""));
    let mut state = String::from("{\"version\": 1, \"toggles\": {\"rules\": [");
    state += "{\"name\": \"bad name!\", \"allow\": true},";
    for i in 0..1_000_000 {
        if i > 0 {
            state += ",";
        }
        state += &format!("{{\"name\": \"n{i}.allowed.test\", \"allow\": true}}");
    }
    state += "]}}\n";
    dir.write("state.json", &state);
    let mut ts = Telesink::start_with(dir, &cfg, &[]);
    assert!(ts.wait_log("\"bad name!\" dropped", Duration::from_secs(1)));
    assert!(ts.wait_log(
        "holds 1000000 runtime rules, more than [control] max_runtime_rules = 10000",
        Duration::from_secs(1)
    ));
    let status = json(&ts, &["status"]);
    assert_eq!(status["rules"].as_array().unwrap().len(), 10_000);
    assert_eq!(status["rules_refused"], 990_001);
    assert!(!status.to_string().contains("bad name!"));
    ok(&ts, &["profile", "enable", "ads"]);
    assert_eq!(rcode(&ts, "127.0.0.1", ADS), ResponseCode::NoError);
    let (success, out, err) = ts.ctl(&["allow", "one-more.test"]);
    assert!(!success, "{out}");
    assert!(
        err.contains("limited to 10000 ([control] max_runtime_rules)"),
        "{err}"
    );
    // An existing rule can still be replaced or removed at the cap.
    ok(&ts, &["allow", "n5.allowed.test", "--remove"]);
    ts.signal("TERM");
    let asked = Instant::now();
    wait_until("the stop", Duration::from_secs(10), || !ts.is_running());
    eprintln!("stopped after {:?}", asked.elapsed());
}

/// Sixteen members of the socket's group each send headers and then one byte of a
/// 100-byte body, and hold: the admin's commands still get through (a trickling
/// request is not "busy" and makes room), and the trickling ones are closed.
#[test]
fn slow_control_clients_do_not_lock_out_the_admin() {
    let Some((_knot, ts)) = start("", &[]) else {
        return;
    };
    let sock = ts.dir.path().join("control.sock");
    let slow: Vec<UnixStream> = (0..16)
        .map(|_| {
            let mut s = UnixStream::connect(&sock).unwrap();
            s.write_all(
                b"POST /v1/profiles/ads HTTP/1.1\r\nHost: l\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
            )
            .unwrap();
            s
        })
        .collect();
    // Their headers are read.
    std::thread::sleep(Duration::from_millis(300));
    ok(&ts, &["status"]);
    ok(&ts, &["profile", "enable", "ads"]);
    let m = ts.q_from("127.0.0.1", ADS, hickory_proto::rr::RecordType::A);
    assert_eq!(addrs(&m), ["0.0.0.0"]);
    drop(slow);
}

/// Runtime state is never hidden or sticky: log-only switches and their timers show in
/// status and profiles; a toggle that says what the config says is not kept (it would
/// silently override a later config edit); `profile reset` returns a profile to the
/// config and says when there is nothing to reset.
#[test]
fn runtime_state_is_shown_and_returns_to_the_config() {
    let Some((_knot, ts)) = start("", &[]) else {
        return;
    };
    ok(&ts, &["profile", "disable", "tele"]);
    ok(&ts, &["profile", "enable", "tele"]);
    let status = ok(&ts, &["status"]);
    assert!(
        status.contains("no runtime toggles: every profile as the config says"),
        "{status}"
    );
    let state = std::fs::read_to_string(ts.dir.path().join("state.json")).unwrap();
    assert!(
        !state.contains("\"tele\""),
        "an undo is kept as a toggle: {state}"
    );

    ok(&ts, &["log-only", "ads", "on", "--for", "1h"]);
    let status = ok(&ts, &["status"]);
    assert!(
        status.contains("ads observed (log-only) for every group, reverts in"),
        "{status}"
    );
    let v = json(&ts, &["status"]);
    assert_eq!(v["log_only"][0]["profile"], "ads", "{v}");
    let profiles = ok(&ts, &["profiles"]);
    assert!(
        profiles.contains("toggled: ads observed (log-only)"),
        "{profiles}"
    );

    ok(&ts, &["profile", "disable", "tele", "--group", "finance"]);
    assert_eq!(rcode(&ts, "127.0.0.2", TELE), ResponseCode::NoError);
    ok(&ts, &["profile", "reset", "tele", "--group", "finance"]);
    assert_eq!(rcode(&ts, "127.0.0.2", TELE), ResponseCode::NXDomain);
    let (success, out, err) = ts.ctl(&["profile", "reset", "tele"]);
    assert!(!success, "{out}");
    assert!(
        err.contains("tele has no runtime toggle for every group: it is as the config says"),
        "{err}"
    );
    ok(&ts, &["profile", "reset", "ads"]);
    assert!(ok(&ts, &["status"]).contains("no runtime toggles"));
}

/// A reload that changes settings only a restart applies says which, in `telesink
/// reload`'s answer and in the log, instead of keeping the old values without a word;
/// one that changes none says nothing of the kind.
#[test]
fn a_reload_names_the_settings_that_need_a_restart() {
    let Some((knot, ts)) = start("", &[]) else {
        return;
    };
    let cfg = ts.dir.path().join("telesink.toml");
    let out = ok(&ts, &["reload"]);
    assert!(!out.contains("needs a restart"), "{out}");
    let changed = config(&knot, "[cache]\nsize = 77\n").replace(
        &format!("servers = [\"{}\"]", knot.addr),
        &format!("servers = [\"{}\", \"192.0.2.53:53\"]", knot.addr),
    );
    std::fs::write(&cfg, changed).unwrap();
    let out = ok(&ts, &["reload"]);
    assert!(
        out.contains("needs a restart to take effect (running with the old values until then): upstream, cache"),
        "{out}"
    );
    assert!(ts.wait_log(
        "changed settings that only a restart applies, running with their old values until then: upstream, cache",
        Duration::from_secs(2)
    ));
}

/// The state file is renamed into place but its folder cannot be synced (injected): the
/// change stands, because a restart reads the new file; before, the old snapshot went on
/// serving while the new toggles were on disk. Status and /health say it is not durably
/// saved.
#[test]
fn a_state_file_whose_folder_cannot_be_synced_keeps_the_change_and_says_so() {
    if !require("knotd") {
        return;
    }
    let knot = Knot::start_zones(&[(".", ROOT_WILDCARD)]);
    let dir = TempDir::new("control-fsync");
    dir.write("tele.list", &format!("{TELE}\n"));
    dir.write("ads.list", &format!("{ADS}\n"));
    let cfg = dir.write("telesink.toml", &config(&knot, ""));
    let ts = Telesink::start_env(
        dir,
        &cfg,
        &[],
        &[("TELESINK_FAILPOINTS", "state-folder-sync")],
    );
    ok(&ts, &["profile", "disable", "tele"]);
    assert_eq!(rcode(&ts, "127.0.0.1", TELE), ResponseCode::NoError);
    let state = std::fs::read_to_string(ts.dir.path().join("state.json")).unwrap();
    assert!(state.contains("\"tele\""), "{state}");
    let status = ok(&ts, &["status"]);
    assert!(
        status.contains("NOT SAVED") && status.contains("a power cut may bring the old one back"),
        "{status}"
    );
}
