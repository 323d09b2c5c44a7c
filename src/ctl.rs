//! The CLI commands that talk to the running daemon, and their human-readable output.
//! `--json` prints the daemon's answer as it came, for scripts.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;
use telesink::control::client::{self, ClientError};

use super::SocketArgs;

/// The socket to use: --socket, else TELESINK_SOCKET, else the config's control.socket,
/// else the default place.
fn socket_of(args: &SocketArgs) -> PathBuf {
    if let Some(s) = &args.socket {
        return s.clone();
    }
    if let Some(s) = std::env::var_os("TELESINK_SOCKET") {
        return PathBuf::from(s);
    }
    let configured = telesink::config::LoadedConfig::load(&args.config)
        .ok()
        .and_then(|c| c.config.control.socket);
    telesink::control::socket_path(configured.as_deref()).0
}

pub fn call(
    args: &SocketArgs,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, ClientError> {
    match client::request(&socket_of(args), method, path, body) {
        // Say why the socket may be the wrong one: a config that does not parse cannot
        // name it (the daemon keeps running on the last good config meanwhile).
        Err(ClientError::Connect { path, source }) if args.socket.is_none() => {
            match telesink::config::LoadedConfig::load(&args.config) {
                Err(e) if args.config.exists() => Err(ClientError::BrokenConfig {
                    path,
                    source,
                    config: args.config.clone(),
                    parse: e.to_string(),
                }),
                _ => Err(ClientError::Connect { path, source }),
            }
        }
        other => other,
    }
}

pub fn print(args: &SocketArgs, v: &Value, human: fn(&Value) -> String) -> ExitCode {
    if args.json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        print!("{}", human(v));
    }
    ExitCode::SUCCESS
}

fn run(
    args: &SocketArgs,
    method: &str,
    path: &str,
    body: Option<&Value>,
    human: fn(&Value) -> String,
) -> ExitCode {
    match call(args, method, path, body) {
        Ok(v) => print(args, &v, human),
        Err(e) => {
            eprintln!("telesink: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn status(args: &SocketArgs) -> ExitCode {
    run(args, "GET", "/v1/status", None, status_text)
}

pub fn profiles(args: &SocketArgs) -> ExitCode {
    run(args, "GET", "/v1/profiles", None, profiles_text)
}

pub fn profile(args: &SocketArgs, name: &str, body: Value) -> ExitCode {
    run(
        args,
        "POST",
        &format!("/v1/profiles/{name}"),
        Some(&body),
        report_text,
    )
}

pub fn log_only(args: &SocketArgs, name: &str, body: Value) -> ExitCode {
    run(
        args,
        "POST",
        &format!("/v1/log-only/{name}"),
        Some(&body),
        report_text,
    )
}

pub fn rule(args: &SocketArgs, body: Value) -> ExitCode {
    run(args, "POST", "/v1/rules", Some(&body), report_text)
}

pub fn reload(args: &SocketArgs) -> ExitCode {
    run(args, "POST", "/v1/reload", None, report_text)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn n(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn list(v: &Value, key: &str) -> String {
    let items: Vec<&str> = v
        .get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

fn span(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// "for group G, reverts in 5m 0s": who a runtime change applies to and how long.
fn scope_text(v: &Value, lapse: &str, forever: &str) -> String {
    let now = telesink::clock::unix_now();
    let group = v
        .get("group")
        .and_then(Value::as_str)
        .map_or("every group".to_owned(), |g| format!("group {g}"));
    let until = v
        .get("until")
        .and_then(Value::as_u64)
        .map_or(forever.to_owned(), |u| {
            format!("{lapse} in {}", span(u.saturating_sub(now)))
        });
    format!("for {group}, {until}")
}

fn toggle_text(t: &Value) -> String {
    let on = if t.get("enabled").and_then(Value::as_bool) == Some(true) {
        "on"
    } else {
        "off"
    };
    format!(
        "{} {on} {}",
        s(t, "profile"),
        scope_text(t, "reverts", "until changed")
    )
}

fn rule_text(r: &Value) -> String {
    let verb = if r.get("allow").and_then(Value::as_bool) == Some(true) {
        "allow"
    } else {
        "block"
    };
    format!(
        "{verb} {} {}",
        s(r, "name"),
        scope_text(r, "lapses", "until removed")
    )
}

fn status_text(v: &Value) -> String {
    let mut out = format!(
        "telesink {}, up {}, config {}\npolicy generation {}: {} names in {} lists; firewall {} (restored {} times)\nqueries {} ({} blocked) from {} clients; reloads {} ok, {} failed\n",
        s(v, "version"),
        span(n(v, "uptime_secs")),
        s(v, "config"),
        n(v, "generation"),
        n(v, "names"),
        n(v, "lists"),
        s(v, "firewall"),
        n(v, "firewall_restores"),
        n(v, "queries"),
        n(v, "blocked"),
        n(v, "clients_seen"),
        n(v, "reloads_ok"),
        n(v, "reloads_failed"),
    );
    if let Some(sh) = v.get("shadow").filter(|x| !x.is_null()) {
        out += &format!(
            "shadow resolution: {} addresses learned; not learned: {} in the allow set, {} shared with allowed names, {} never learned (upstreams, own, never_learn_cidrs), {} over max_addresses; {} removed as shared; {} names dropped (queue full)\n",
            n(sh, "added"),
            n(sh, "skipped_allow"),
            n(sh, "shared_skipped"),
            n(sh, "never_learn_skipped"),
            n(sh, "over_max"),
            n(sh, "shared_removed"),
            n(sh, "queue_full"),
        );
    }
    for g in v
        .get("groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out += &format!(
            "group {}: on: {}; log-only: {}\n",
            s(g, "group"),
            list(g, "on"),
            list(g, "log_only")
        );
    }
    let rules = v.get("rules").and_then(Value::as_array);
    if let Some(rs) = rules.filter(|r| !r.is_empty()) {
        out += "runtime rules (telesink allow / block):\n";
        for r in rs {
            out += &format!("  {}\n", rule_text(r));
        }
    }
    let toggles = v.get("toggles").and_then(Value::as_array);
    match toggles.filter(|t| !t.is_empty()) {
        None => out += "no runtime toggles\n",
        Some(ts) => {
            out += &format!("runtime toggles (kept in {}):\n", s(v, "state_file"));
            for t in ts {
                out += &format!("  {}\n", toggle_text(t));
            }
        }
    }
    out
}

fn profiles_text(v: &Value) -> String {
    let mut out = format!(
        "{:<30} {:<9} {:>8} {:>7}  STATE\n",
        "PROFILE", "MODE", "NAMES", "CIDRS"
    );
    for p in v.as_array().into_iter().flatten() {
        let groups: Vec<String> = p
            .get("groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|g| format!("{}={}", s(g, "group"), s(g, "state")))
            .collect();
        out += &format!(
            "{:<30} {:<9} {:>8} {:>7}  {}\n",
            s(p, "name"),
            s(p, "mode"),
            n(p, "names"),
            n(p, "cidrs"),
            groups.join(" ")
        );
        for t in p
            .get("toggles")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out += &format!("{:<30} toggled: {}\n", "", toggle_text(t));
        }
    }
    out
}

fn report_text(v: &Value) -> String {
    let mut out = String::new();
    let changes = v.get("changes").and_then(Value::as_array);
    for c in changes.into_iter().flatten() {
        out += &format!(
            "{} for group {}: {} -> {} ({} names, {} CIDRs; clients: {})\n",
            s(c, "profile"),
            s(c, "group"),
            s(c, "from"),
            s(c, "to"),
            n(c, "names"),
            n(c, "cidrs"),
            list(c, "clients"),
        );
    }
    let rules = v.get("rules").and_then(Value::as_array);
    for r in rules.into_iter().flatten().filter_map(Value::as_str) {
        out += &format!("{r}\n");
    }
    if changes.is_none_or(|c| c.is_empty()) && rules.is_none_or(|r| r.is_empty()) {
        out += "no profile changes state\n";
    }
    let ms = v.get("ms").and_then(Value::as_f64).unwrap_or(0.0);
    if v.get("dry_run").and_then(Value::as_bool) == Some(true) {
        out += "dry run: nothing changed\n";
    } else {
        out += &format!(
            "live as generation {} after {ms:.1} ms\n",
            n(v, "generation")
        );
    }
    out
}

/// The daemon's explanation printed by the same `Display` as the offline one.
pub fn explanation(v: &Value) -> String {
    match serde_json::from_value::<telesink::policy::Explanation>(v.clone()) {
        Ok(e) => e.to_string(),
        Err(_) => format!("{v}\n"),
    }
}
