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

pub fn profile_reset(args: &SocketArgs, name: &str, mut body: Value) -> ExitCode {
    if let Some(o) = body.as_object_mut() {
        o.remove("for_secs");
    }
    run(
        args,
        "POST",
        &format!("/v1/profiles/{name}/reset"),
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
    let by = match (
        v.get("by").and_then(Value::as_str),
        v.get("why").and_then(Value::as_str),
    ) {
        (Some(by), Some(why)) => format!(" (by {by}: {why})"),
        (Some(by), None) => format!(" (by {by})"),
        (None, Some(why)) => format!(" ({why})"),
        (None, None) => String::new(),
    };
    format!("for {group}, {until}{by}")
}

/// A profile toggle in words: "tele off for group finance, reverts in 2h".
fn toggle_text(t: &Value) -> String {
    switch_text(t, "on", "off")
}

/// A log-only switch in words.
fn log_only_text(t: &Value) -> String {
    switch_text(t, "observed (log-only)", "not observed")
}

fn switch_text(t: &Value, on: &str, off: &str) -> String {
    let state = if t.get("enabled").and_then(Value::as_bool) == Some(true) {
        on
    } else {
        off
    };
    format!(
        "{} {state} {}",
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

/// The status lines of client identity: what the tables hold, their bounds, and what
/// went to client="other".
fn devices_text(d: &Value) -> String {
    let mut out = if d.get("devices_on").and_then(Value::as_bool) == Some(true) {
        format!(
            "clients: {} devices on {} addresses (neighbour table), {} leased addresses, {} configured; ",
            n(d, "devices"),
            n(d, "addresses"),
            n(d, "leased_addresses"),
            n(d, "configured"),
        )
    } else {
        "clients: by address ([identity] devices = false); ".to_owned()
    };
    out += &format!(
        "{} of {} labels held, each kept {} after it was last seen
",
        n(d, "labels"),
        n(d, "max_labels"),
        span(n(d, "forget_after_secs")),
    );
    if n(d, "other_counts") > 0 {
        out += &format!(
            "  {} counts went to client=\"other\" (more clients active than [metrics] max_clients), last at {}\n",
            n(d, "other_counts"),
            telesink::clock::utc_time(n(d, "last_other_unix")),
        );
    }
    if n(d, "addresses_dropped") > 0 {
        out += &format!(
            "  {} addresses not taken as a device's: [identity] max_addresses were known\n",
            n(d, "addresses_dropped")
        );
    }
    if let Some(e) = d.get("neighbour_error").and_then(Value::as_str) {
        out += &format!("  the neighbour table cannot be read: {e}\n");
    }
    for f in d
        .get("lease_files")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out += &match f.get("error").and_then(Value::as_str) {
            Some(e) => format!("  lease file {}: {e}\n", s(f, "path")),
            None => format!(
                "  lease file {} ({}): {} leases, {} lines skipped\n",
                s(f, "path"),
                s(f, "format"),
                n(f, "leases"),
                n(f, "skipped_lines")
            ),
        };
    }
    out
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
    if let Some(d) = v.get("devices") {
        out += &devices_text(d);
    }
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
        out += &format!(
            "shadow resolution tracks {} names ({} not tracked at max_names, {} forgotten: no client asked again)\n",
            n(sh, "names_tracked"),
            n(sh, "names_dropped"),
            n(sh, "names_forgotten"),
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
    let toggles = v
        .get("toggles")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let observed = v
        .get("log_only")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if toggles.is_empty() && observed.is_empty() {
        out += "no runtime toggles: every profile as the config says\n";
    } else {
        out += &format!(
            "runtime toggles (kept in {}; `telesink profile reset NAME` returns one to the config):\n",
            s(v, "state_file")
        );
        for t in &toggles {
            out += &format!("  {}\n", toggle_text(t));
        }
        for t in &observed {
            out += &format!("  {}\n", log_only_text(t));
        }
    }
    if let Some(why) = v.get("state_unsaved").and_then(Value::as_str) {
        out += &format!(
            "NOT SAVED: the toggles in force are not in {} ({why}); retried every 10 s\n",
            s(v, "state_file")
        );
    }
    if n(v, "rules_refused") > 0 {
        out += &format!(
            "runtime rules refused at [control] max_runtime_rules or dropped from the state file: {}\n",
            n(v, "rules_refused")
        );
    }
    if let Some(c) = v.get("cluster") {
        out += &cluster_text(c);
    }
    out
}

/// The status lines of a cluster node: the store, every node, the overrides.
fn cluster_text(c: &Value) -> String {
    let now = telesink::clock::unix_now();
    let connected = c.get("connected").and_then(Value::as_bool) == Some(true);
    let mut out = format!(
        "cluster: site {}, node {}, store {}, shared revision {} in force",
        s(c, "site"),
        s(c, "node"),
        if connected {
            "connected"
        } else {
            "UNREACHABLE"
        },
        n(c, "revision"),
    );
    let contact = n(c, "last_contact_unix");
    if contact > 0 {
        out += &format!(", last contact {} ago", span(now.saturating_sub(contact)));
    }
    out += "\n";
    if let Some(e) = c.get("last_error").and_then(Value::as_str) {
        out += &format!("  last problem: {e}\n");
    }
    let me = s(c, "node");
    for node in c
        .get("nodes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ago = n(node, "last_contact_ms");
        out += &format!(
            "  node {:<16} revision {:<6} generation {:<6} last report {} ago{}\n",
            s(node, "node"),
            n(node, "revision"),
            n(node, "generation"),
            if ago < 1000 {
                format!("{ago} ms")
            } else {
                span(ago / 1000)
            },
            if s(node, "node") == me {
                " (this node)"
            } else {
                ""
            }
        );
        for o in node
            .get("overrides")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out += &format!("    override: {}\n", o.as_str().unwrap_or_default());
        }
    }
    let settings: Vec<(String, String)> = c
        .get("settings")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    if !settings.is_empty() {
        out += "  settings in force (from central: the fleet's hub; site: this site's shared state; node: --local here):
";
        for (what, from) in settings {
            out += &format!("    {from:<7} {what}\n");
        }
    }
    if let Some(f) = c.get("fleet") {
        out += &format!(
            "  fleet: hub domain {}, central revision {} in force; evidence: {} days sent, {} due, {} sends failed",
            s(f, "hub"),
            n(f, "central_revision"),
            n(f, "days_sent"),
            n(f, "days_due"),
            n(f, "failures")
        );
        let sent = n(f, "last_sent_unix");
        if sent > 0 {
            out += &format!(", last day sent {} ago", span(now.saturating_sub(sent)));
        }
        out += "\n";
        if let Some(e) = f.get("last_error").and_then(Value::as_str) {
            out += &format!("  fleet problem: {e}\n");
        }
    }
    let mismatched = list(c, "mismatched");
    if !mismatched.is_empty() && mismatched != "-" {
        out += &format!(
            "  WARNING: config or lists differ from this node's on: {mismatched} (deploy the same files to every node)\n"
        );
    }
    let overrides: Vec<&str> = c
        .get("overrides")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !overrides.is_empty() {
        out += "  this node's overrides (--local; kept until cleared, never overwritten by the shared state):\n";
        for o in overrides {
            out += &format!("    {o}\n");
        }
    }
    if n(c, "refused") > 0 {
        out += &format!(
            "  shared values refused here (see the log): {}\n",
            n(c, "refused")
        );
    }
    out += &format!(
        "  learned addresses: {} shared, {} taken from other nodes, {} not shared, {} refused\n",
        n(c, "learned_published"),
        n(c, "learned_imported"),
        n(c, "learned_unshared"),
        n(c, "learned_refused"),
    );
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
        for t in p
            .get("log_only_toggles")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out += &format!("{:<30} toggled: {}\n", "", log_only_text(t));
        }
    }
    out
}

fn report_text(v: &Value) -> String {
    let mut out = String::new();
    if let Some(keys) = v.get("restart_needed").and_then(Value::as_array) {
        let keys: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
        out += &format!(
            "needs a restart to take effect (running with the old values until then): {}\n",
            keys.join(", ")
        );
    }
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
    if v.get("local").and_then(Value::as_bool) == Some(true) {
        out += "this node only (--local): an override kept until cleared, never overwritten by the shared state\n";
    }
    if let Some(c) = v.get("cluster") {
        out += &format!(
            "shared revision {}: in force on {}",
            n(c, "revision"),
            list(c, "applied")
        );
        let pending = list(c, "pending");
        if !pending.is_empty() && pending != "-" {
            out += &format!("; NOT YET on {pending} (see `telesink status`)");
        }
        out += "\n";
    }
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

/// The report's period from `--since` (YYYY-MM-DD or Nd) and `--until`.
pub fn report_query(
    since: &str,
    until: Option<&str>,
    client: Option<String>,
    profile: Option<String>,
    by: Option<String>,
) -> Result<telesink::evidence::report::Query, String> {
    let (since, until) = telesink::evidence::report::period(since, until)?;
    let q = telesink::evidence::report::Query {
        since,
        until,
        client,
        profile,
        by,
        summary: false,
    };
    q.validate().map_err(|e| e.to_string())?;
    Ok(q)
}

/// The ledger file of the config, for reports while the daemon is down.
fn ledger_file(args: &SocketArgs) -> Result<PathBuf, String> {
    let cfg = telesink::config::LoadedConfig::load(&args.config).map_err(|e| e.to_string())?;
    let state = telesink::apply::state_file(&cfg).path;
    Ok(telesink::evidence::path_of(&cfg.config.evidence, &state))
}

fn write_out(text: &str, output: Option<&std::path::Path>) -> ExitCode {
    match output {
        None => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Some(path) => match std::fs::write(path, text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("telesink: cannot write {}: {e}", path.display());
                ExitCode::FAILURE
            }
        },
    }
}

pub fn report(
    args: &SocketArgs,
    q: &telesink::evidence::report::Query,
    format: &str,
    output: Option<&std::path::Path>,
) -> ExitCode {
    use telesink::evidence::report::{Report, run_checked};
    let body = serde_json::to_value(q).unwrap_or_default();
    let report: Report = match call(args, "POST", "/v1/report", Some(&body)) {
        Ok(v) => match serde_json::from_value(v) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("telesink: malformed report from the daemon: {e}");
                return ExitCode::FAILURE;
            }
        },
        Err(ClientError::Connect { .. }) => {
            // The daemon is down: the file, read-only.
            let opened = ledger_file(args).and_then(|p| {
                telesink::evidence::Store::open_read_only(&p).map_err(|e| e.to_string())
            });
            // The config's profiles are valid filters too (a profile that never
            // blocked anything is no typo), and the context is the policy a start would
            // serve (config and saved toggles).
            let booted = telesink::config::LoadedConfig::load(&args.config)
                .ok()
                .and_then(|c| telesink::apply::boot_policy(&c).ok().map(|(p, _)| p));
            let profiles: Vec<String> = booted
                .iter()
                .flat_map(|p| p.profiles.iter().map(|x| x.name.clone()))
                .collect();
            let source = ledger_file(args)
                .map(|p| {
                    format!(
                        "the ledger file {} (the daemon was not running)",
                        p.display()
                    )
                })
                .unwrap_or_default();
            let checked = opened
                .and_then(|store| run_checked(&store, q, &profiles).map_err(|e| e.to_string()));
            match checked {
                Ok(mut r) => {
                    r.context = booted
                        .as_ref()
                        .map(|p| telesink::control::evidence_context(p, &source));
                    r
                }
                Err(e) => {
                    eprintln!("telesink: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        Err(e) => {
            eprintln!("telesink: {e}");
            return ExitCode::FAILURE;
        }
    };
    if report.lines_left_out > 0 {
        eprintln!("telesink: {}", report.left_out_note());
    }
    let text = match format {
        "csv" => report.csv(),
        "json" => report.json() + "\n",
        "html" => report.html(),
        _ => report.table(),
    };
    write_out(&text, output)
}

pub fn report_verify(args: &SocketArgs, ledger: Option<&std::path::Path>) -> ExitCode {
    let asked = match ledger {
        // A given file is checked as it is, never through a daemon.
        Some(_) => Err(ClientError::Connect {
            path: PathBuf::new(),
            source: std::io::Error::other("a ledger file was given"),
        }),
        None => call(args, "POST", "/v1/report/verify", None),
    };
    let v = match asked {
        Ok(v) => v,
        Err(ClientError::Connect { .. }) => {
            let file = match ledger {
                Some(p) if !p.exists() => {
                    eprintln!("telesink: no ledger file {}", p.display());
                    return ExitCode::FAILURE;
                }
                Some(p) => Ok(p.to_owned()),
                None => ledger_file(args),
            };
            let checked = file.and_then(|p| {
                let store =
                    telesink::evidence::Store::open_read_only(&p).map_err(|e| e.to_string())?;
                let v = store.verification().map_err(|e| e.to_string())?;
                serde_json::to_value(v).map_err(|e| e.to_string())
            });
            match checked {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("telesink: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        Err(e) => {
            eprintln!("telesink: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    let verified: telesink::evidence::Verification = match serde_json::from_value(v) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("telesink: the daemon's answer is not a verification: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !args.json {
        match &verified.first_bad_day {
            None => println!(
                "the digest chain holds: {} closed days verified",
                verified.days.unwrap_or(0)
            ),
            Some(day) => println!(
                "the digest chain breaks at {day}: that day's rows are not what was recorded when it closed"
            ),
        }
        for b in &verified.breaks {
            println!("ledger break at {b}");
        }
    }
    if verified.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub fn report_purge(args: &SocketArgs, client: &str) -> ExitCode {
    let body = serde_json::json!({ "client": client });
    run(args, "POST", "/v1/report/purge", Some(&body), |v| {
        format!(
            "client {}: {} rows erased; the purge is recorded in the ledger\n",
            s(v, "client"),
            n(v, "rows")
        )
    })
}

/// Polls the daemon's live view and prints what arrives, until `count` lines or Ctrl-C.
pub fn tail(
    args: &SocketArgs,
    client: Option<std::net::IpAddr>,
    blocked: bool,
    count: Option<u64>,
) -> ExitCode {
    use telesink::evidence::tail::Batch;
    let mut after: Option<u64> = None;
    let mut printed = 0u64;
    loop {
        let path = after.map_or("/v1/tail".to_owned(), |a| format!("/v1/tail?after={a}"));
        let batch: Batch = match call(args, "GET", &path, None)
            .map_err(|e| e.to_string())
            .and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()))
        {
            Ok(b) => b,
            Err(e) => {
                eprintln!("telesink: {e}");
                return ExitCode::FAILURE;
            }
        };
        if batch.lost > 0 {
            eprintln!("... {} events lost (this reader fell behind)", batch.lost);
        }
        for e in batch.events {
            if client.is_some_and(|c| c != e.client)
                || (blocked && e.verdict != "blocked" && !e.observed)
            {
                continue;
            }
            if args.json {
                println!("{}", serde_json::to_string(&e).unwrap_or_default());
            } else {
                let secs = (e.at_ms / 1000) % 86_400;
                // The device first (what the metrics and the ledger call it), then the
                // address it used this time.
                let who = match &e.device {
                    Some(d) if *d != e.client.to_string() => format!("{d} ({})", e.client),
                    _ => e.client.to_string(),
                };
                println!(
                    "{:02}:{:02}:{:02}.{:03}  {:<15}  {:<9}  {}{}{}",
                    secs / 3600,
                    secs % 3600 / 60,
                    secs % 60,
                    e.at_ms % 1000,
                    who,
                    if e.observed && e.verdict != "blocked" {
                        "observed"
                    } else {
                        &e.verdict
                    },
                    e.name,
                    e.profile
                        .map(|p| format!("  profile {p}"))
                        .unwrap_or_default(),
                    e.rule.map(|r| format!("  rule {r}")).unwrap_or_default(),
                );
            }
            printed += 1;
            if count.is_some_and(|c| printed >= c) {
                return ExitCode::SUCCESS;
            }
        }
        after = Some(batch.next);
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}
