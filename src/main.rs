//! The telesink command line: `run` the appliance, `check` a configuration, and talk to
//! the running daemon over its control socket (`status`, `profile`, `reload`, ...).

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use telesink::config::LoadedConfig;
use telesink::daemon::{self, Overrides};
use telesink::evidence::render::ReportFormat;
use telesink::policy;
use tracing_subscriber::EnvFilter;

const DEFAULT_CONFIG: &str = "/etc/telesink/telesink.toml";

#[derive(Parser)]
#[command(
    name = "telesink",
    version,
    about = "DNS sinkhole and egress firewall for telemetry endpoints"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the resolver.
    Run {
        /// The config file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Listen on this address (UDP and TCP) instead of the config's; repeatable.
        #[arg(long)]
        listen: Vec<SocketAddr>,
        /// Forward to this upstream instead of the config's; repeatable. The forms of
        /// [upstream] servers: 192.0.2.1:53, tls://192.0.2.1#dns.example,
        /// https://dns.example/dns-query (a name needs [upstream.bootstrap]).
        #[arg(long, value_parser = telesink::config::upstream::parse)]
        upstream: Vec<telesink::config::upstream::ServerSpec>,
        /// Serve Prometheus metrics here instead of the config's metrics.listen.
        #[arg(long)]
        metrics: Option<SocketAddr>,
    },
    /// Validate the config and every list it names; print each problem as file:line.
    Check {
        /// The config file to check (with every list it names).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Machine-readable output: {"ok", "problems": [{file, line, message, skipped}], "warnings"}.
        #[arg(long)]
        json: bool,
    },
    /// Why a name is blocked or not for a client: the verdict, the profile and the rule
    /// with its list file and line (including an allow rule that won).
    Explain {
        /// The name to explain, as a client would ask for it.
        name: String,
        /// The client's address (decides its group); default 127.0.0.1.
        #[arg(long, default_value = "127.0.0.1")]
        client: std::net::IpAddr,
        /// The config file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Ask the running daemon through this socket (default: as for `status`).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Evaluate the config on disk, not the running daemon's policy.
        #[arg(long)]
        offline: bool,
    },
    /// The nftables firewall, without the resolver.
    Firewall {
        #[command(subcommand)]
        action: FirewallAction,
        /// The config file (before or after the subcommand).
        #[arg(long, global = true, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The running daemon's control socket (default: from the config).
        #[arg(long, global = true)]
        socket: Option<PathBuf>,
        /// Machine-readable output (on every firewall command).
        #[arg(long, global = true)]
        json: bool,
    },
    /// What the running daemon serves: generation, profiles per group, toggles, counts.
    Status {
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Every profile with its size and its state in each group.
    Profiles {
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Switch a profile on or off at runtime (kept across restarts).
    Profile {
        /// enable: the profile blocks; disable: it does not; reset: its runtime toggles and
        /// log-only switches go (for --group, or those for every group), the config decides.
        #[arg(value_enum)]
        action: OnOff,
        /// The profile.
        name: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Log-only (observe) a profile: it answers normally and counts what it would block,
    /// on or off, whether it was on or off before (kept across restarts).
    LogOnly {
        /// The profile.
        name: String,
        /// on: observe it; off: stop observing it.
        #[arg(value_enum)]
        state: LogOnlyState,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Unblock a name now, for every group or one (kept across restarts): a runtime rule
    /// with the precedence of a list rule (an exact allow beats a suffix block).
    Allow {
        #[command(flatten)]
        rule: RuleArgs,
    },
    /// Block a name now, for every group or one (kept across restarts), in DNS and, with
    /// shadow resolution, in the firewall's learned sets.
    Block {
        #[command(flatten)]
        rule: RuleArgs,
    },
    /// The evidence ledger over a period: which device tried to reach which telemetry
    /// endpoint (docs/EVIDENCE.md). Asks the running daemon (including what it has not
    /// written yet), else reads the file.
    Report {
        #[command(subcommand)]
        action: Option<ReportAction>,
        /// From this day on: YYYY-MM-DD, or 30d for the last 30 days (default 30d).
        #[arg(long, default_value = "30d")]
        since: String,
        /// Up to this day, YYYY-MM-DD (default: today).
        #[arg(long)]
        until: Option<String>,
        /// Only this client (its label as reports show it).
        #[arg(long)]
        client: Option<String>,
        /// Only this profile.
        #[arg(long)]
        profile: Option<String>,
        /// Sum by client, name, profile or day (default: every row).
        #[arg(long)]
        by: Option<String>,
        /// table, csv, json or html (default table; --json is --format json).
        #[arg(long, value_enum)]
        format: Option<ReportFormat>,
        /// Write here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Verdicts as they happen (time, client, name, verdict, profile, rule), for
    /// troubleshooting; forwarded names too, never written to disk.
    Tail {
        /// Only this client address.
        #[arg(long)]
        client: Option<std::net::IpAddr>,
        /// Only blocked (and observed) queries.
        #[arg(long)]
        blocked: bool,
        /// Stop after this many lines (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Regenerate the Microsoft 365 allow set and Required names from Microsoft's endpoint
    /// data (worldwide), write them next to the config, check them and reload the daemon.
    #[command(name = "update-m365")]
    UpdateM365 {
        /// The endpoints web service (default https://endpoints.office.com), or a saved
        /// endpoints JSON file for a gateway without access to it.
        #[arg(long)]
        from: Option<String>,
        /// The data's version (YYYYMMDDNN), for a file (the service says its own).
        #[arg(long)]
        version: Option<String>,
        /// Where to write the lists (default: <config dir>/blocklists, read before the
        /// shipped lists).
        #[arg(long)]
        output_dir: Option<PathBuf>,
        /// Install even when the allow set shrinks by more than half.
        #[arg(long)]
        force: bool,
        /// Keep Required ranges broader than /12 (IPv4) or /24 (IPv6) instead of refusing
        /// the document; each is printed as a warning (check also wants
        /// firewall.allow_broad = true for them).
        #[arg(long)]
        allow_broad: bool,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Write a first gateway config from the interfaces' real addresses (listen,
    /// allowed_clients, metrics, firewall interfaces), check it and say what was chosen.
    Init {
        /// The LAN interface: telesink answers DNS on its addresses for its networks.
        #[arg(long)]
        lan: String,
        /// The WAN interface (default: none; forwarded traffic is filtered on any way out).
        #[arg(long)]
        wan: Option<String>,
        /// Where to write the config.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        output: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
        /// An Active Directory DNS domain (comma-separated for several): it and the LAN's
        /// reverse zones are forwarded to the domain controllers (--dc).
        #[arg(long, value_delimiter = ',', requires = "dc")]
        ad_domain: Vec<String>,
        /// The domain controllers' addresses, comma-separated.
        #[arg(long, value_delimiter = ',', requires = "ad_domain")]
        dc: Vec<std::net::IpAddr>,
    },
    /// Many sites, one view (docs/FLEET.md): the fleet's evidence report and its
    /// verification from the hub, the central policy, the sites the hub sources.
    Fleet(telesink::fleet::cli::FleetArgs),
    /// Re-read config and lists in the running daemon (like SIGHUP, but reports errors).
    Reload {
        #[command(flatten)]
        socket: SocketArgs,
    },
}

/// Who a runtime change applies to, for how long, and whether only to show it.
#[derive(clap::Args, Clone)]
struct ChangeArgs {
    /// Only for this client group (default: every group).
    #[arg(long)]
    group: Option<String>,
    /// Revert by itself after this long: 90s, 30m, 2h, 1d.
    #[arg(long = "for", value_parser = telesink::control::client::parse_duration)]
    duration: Option<u64>,
    /// Show what would change (names, CIDRs, clients) without changing anything.
    #[arg(long)]
    dry_run: bool,
    /// A cluster node: change this node only, as an override that is kept until cleared
    /// and never overwritten by the shared state (works while the store is away).
    #[arg(long)]
    local: bool,
    /// Why: kept with the change, shown in status (and on every node of a cluster).
    #[arg(long)]
    why: Option<String>,
    #[command(flatten)]
    socket: SocketArgs,
}

impl ChangeArgs {
    /// The request body: these fields and the command's own.
    fn body(&self, mut own: serde_json::Value) -> serde_json::Value {
        if let Some(o) = own.as_object_mut() {
            o.insert("group".into(), serde_json::json!(self.group));
            o.insert("for_secs".into(), serde_json::json!(self.duration));
            o.insert("dry_run".into(), serde_json::json!(self.dry_run));
            o.insert("local".into(), serde_json::json!(self.local));
            o.insert("why".into(), serde_json::json!(self.why));
        }
        own
    }
}

#[derive(clap::Args, Clone)]
struct RuleArgs {
    /// The name: `teams.microsoft.com` (that name only) or `*.example.com` (it and every
    /// name below).
    name: String,
    /// Remove the rule for this name (and group) instead of adding one.
    #[arg(long)]
    remove: bool,
    #[command(flatten)]
    change: ChangeArgs,
}

impl RuleArgs {
    fn body(&self, allow: bool) -> serde_json::Value {
        self.change.body(serde_json::json!({
            "name": self.name,
            "allow": allow,
            "remove": self.remove,
        }))
    }
}

#[derive(clap::Subcommand, Clone)]
enum ReportAction {
    /// Check the digest chain of the closed days; names the first day that does not
    /// match, and every time the ledger was started anew. Exit 0 only when both hold.
    Verify {
        /// A ledger file to check as it is (a copy an auditor was given), without the
        /// daemon or a config.
        #[arg(long)]
        ledger: Option<PathBuf>,
    },
    /// Erase one client's rows (GDPR erasure); the ledger records that it happened.
    Purge {
        /// The client's label as reports show it.
        #[arg(long)]
        client: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OnOff {
    Enable,
    Disable,
    Reset,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogOnlyState {
    On,
    Off,
}

/// Global, so a subcommand takes them after its name too (`report verify --config X`).
#[derive(clap::Args, Clone)]
struct SocketArgs {
    /// The daemon's control socket (default: the config's control.socket, else
    /// /run/telesink/control.sock; also TELESINK_SOCKET).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Read the socket path from this config.
    #[arg(long, global = true, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum FirewallAction {
    /// Print the table the config produces with the saved toggles, in nft syntax: the
    /// table a start would install (changes nothing).
    Show,
    /// Program the table once and exit (early boot, before the daemon starts): the
    /// config with the saved toggles, as the daemon would. While the daemon runs, asks it
    /// to install its table again instead.
    Apply,
    /// Delete the table; refused while the daemon runs (it would put the table back at
    /// once: set firewall.enabled = false and reload instead).
    Remove,
    /// Print the per-client reject counters of every profile.
    Counters,
}

mod ctl;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config,
            listen,
            upstream,
            metrics,
        } => run(
            config,
            Overrides {
                listen,
                upstream,
                metrics,
            },
        ),
        Command::Check { config, json } => check(&config, json),
        Command::Firewall {
            action,
            config,
            socket,
            json,
        } => firewall(action, &config, socket, json),
        Command::Explain {
            name,
            client,
            config,
            json,
            socket,
            offline,
        } => explain(&config, &name, client, json, socket, offline),
        Command::Status { socket } => ctl::status(&socket),
        Command::Profiles { socket } => ctl::profiles(&socket),
        Command::Profile {
            action: OnOff::Reset,
            name,
            change,
        } => {
            if change.duration.is_some() {
                eprintln!("telesink: --for does not go with reset (it ends the toggles now)");
                return ExitCode::FAILURE;
            }
            ctl::profile_reset(&change.socket, &name, change.body(serde_json::json!({})))
        }
        Command::Profile {
            action,
            name,
            change,
        } => ctl::profile(
            &change.socket,
            &name,
            change.body(serde_json::json!({ "enabled": matches!(action, OnOff::Enable) })),
        ),
        Command::LogOnly {
            name,
            state,
            change,
        } => ctl::log_only(
            &change.socket,
            &name,
            change.body(serde_json::json!({ "on": matches!(state, LogOnlyState::On) })),
        ),
        Command::Allow { rule } => ctl::rule(&rule.change.socket, rule.body(true)),
        Command::Block { rule } => ctl::rule(&rule.change.socket, rule.body(false)),
        Command::Reload { socket } => ctl::reload(&socket),
        Command::Fleet(args) => telesink::fleet::cli::run(args),
        Command::Report {
            action,
            since,
            until,
            client,
            profile,
            by,
            format,
            output,
            socket,
        } => match action {
            Some(ReportAction::Verify { ledger }) => ctl::report_verify(&socket, ledger.as_deref()),
            Some(ReportAction::Purge { client }) => ctl::report_purge(&socket, &client),
            None => {
                // --json means JSON here as on every other command; with another
                // --format it is a contradiction, said.
                let format = match (format, socket.json) {
                    (None, true) | (Some(ReportFormat::Json), _) => ReportFormat::Json,
                    (Some(f), false) => f,
                    (None, false) => ReportFormat::Table,
                    (Some(_), true) => {
                        eprintln!(
                            "telesink: --json asks for JSON, --format for something else: give one of them"
                        );
                        return ExitCode::FAILURE;
                    }
                };
                let query = match ctl::report_query(&since, until.as_deref(), client, profile, by) {
                    // The page shows the summary only: its lines would cross the
                    // control socket for nothing.
                    Ok(q) => telesink::evidence::report::Query {
                        summary: matches!(format, ReportFormat::Html),
                        ..q
                    },
                    Err(e) => {
                        eprintln!("telesink: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                ctl::report(&socket, &query, format.as_str(), output.as_deref())
            }
        },
        Command::Tail {
            client,
            blocked,
            count,
            socket,
        } => ctl::tail(&socket, client, blocked, count),
        Command::UpdateM365 {
            from,
            version,
            output_dir,
            force,
            allow_broad,
            socket,
        } => update_m365(
            from.as_deref(),
            version,
            output_dir.as_deref(),
            force,
            allow_broad,
            &socket,
        ),
        Command::Init {
            lan,
            wan,
            output,
            force,
            ad_domain,
            dc,
        } => init(
            &lan,
            wan.as_deref(),
            &telesink::init::ActiveDirectory {
                domains: ad_domain,
                dcs: dc,
            },
            &output,
            force,
        ),
    }
}

fn run(config: PathBuf, overrides: Overrides) -> ExitCode {
    // hickory logs two INFO lines per query; that is a log flood on a busy gateway.
    let filter = EnvFilter::try_from_env("TELESINK_LOG").unwrap_or_else(|_| {
        EnvFilter::new(
            "info,hickory_server=warn,hickory_resolver=warn,hickory_net=warn,hickory_proto=warn",
        )
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A broken log stream (journald restarted, a closed pipe) must not take the
        // resolver down: by default the subscriber reports its write error with
        // eprintln!, which panics on that same broken stderr.
        .log_internal_errors(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("telesink: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::run(config, overrides)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn update_m365(
    from: Option<&str>,
    version: Option<String>,
    output_dir: Option<&std::path::Path>,
    force: bool,
    allow_broad: bool,
    socket: &SocketArgs,
) -> ExitCode {
    use telesink::m365;
    let cfg = match LoadedConfig::load(&socket.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("telesink: {e}");
            return ExitCode::FAILURE;
        }
    };
    let source = m365::Source::parse(from, version);
    // The service's name is looked up through the daemon's upstreams (encrypted ones
    // included), never the system's resolver.
    let lookup = match &source {
        m365::Source::Service(_) => {
            match telesink::dns::upstream::lookup::Lookup::of(&cfg.config) {
                Ok(l) => Some(std::sync::Arc::new(l)),
                Err(e) => {
                    eprintln!("telesink: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        m365::Source::File { .. } => None,
    };
    let installed = m365::fetch(&source, allow_broad, lookup).and_then(|update| {
        // Said before the install, which may still refuse them (firewall.allow_broad).
        for net in &update.broad {
            eprintln!(
                "telesink: warning: {net} is broader than /{} and was kept because of --allow-broad: the accept set lets it past every block set",
                m365::too_broad(*net).unwrap_or(0)
            );
        }
        let today = telesink::clock::utc_date(telesink::clock::unix_now());
        m365::install(&cfg, &update, output_dir, force, &today).map(|i| (update, i))
    });
    let (update, done) = match installed {
        Ok(x) => x,
        Err(e) => {
            eprintln!("telesink: {e}");
            return ExitCode::FAILURE;
        }
    };
    let was = done.previous.as_ref().map_or(String::new(), |(n, p)| {
        format!(", was {n} in {}", p.display())
    });
    println!(
        "Microsoft 365 endpoints v{} from {}:
  {} ranges -> {}{was}
  {} Required names -> {}",
        update.version,
        update.source,
        done.ranges,
        done.allow_path.display(),
        done.names,
        done.required_path.display()
    );
    if !update.inexpressible.is_empty() {
        println!(
            "  left out (a wildcard inside a label): {}",
            update.inexpressible.join(", ")
        );
    }
    for key in &done.unused {
        println!("  note: the config does not name it in {key}, so it has no effect there");
    }
    match ctl::call(socket, "POST", "/v1/reload", None) {
        Ok(v) => {
            println!(
                "reloaded: the running daemon serves generation {}",
                v.get("generation")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0)
            );
            ExitCode::SUCCESS
        }
        Err(telesink::control::client::ClientError::Connect { path, .. }) => {
            println!(
                "telesink is not running (no answer on {}): the next start uses them",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("telesink: the lists are written and check out, but the reload failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init(
    lan: &str,
    wan: Option<&str>,
    ad: &telesink::init::ActiveDirectory,
    output: &std::path::Path,
    force: bool,
) -> ExitCode {
    let chosen = match telesink::init::config_for(lan, wan, ad) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("telesink: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = telesink::init::write(output, &chosen.text, force) {
        eprintln!("telesink: {e}");
        return ExitCode::FAILURE;
    }
    println!("wrote {}:", output.display());
    println!("  DNS listens on     {}", chosen.listen.join(", "));
    println!("  answers clients in {}", chosen.networks.join(", "));
    println!("  metrics on         {}", chosen.metrics);
    println!(
        "  firewall           lan {lan}, wan {}",
        wan.unwrap_or("(none)")
    );
    println!("  lists from         {}", chosen.lists_dir.display());
    if !chosen.forwarded.is_empty() {
        println!(
            "  to the DCs         {} (DCs exempt from the rate limit)",
            chosen.forwarded.join(", ")
        );
    }
    println!("checking it:");
    check(output, false)
}

fn check(path: &std::path::Path, json: bool) -> ExitCode {
    let cfg = match LoadedConfig::load(path) {
        Ok(cfg) => cfg,
        Err(e) if json => {
            println!(
                "{}",
                serde_json::json!({ "ok": false, "config": path, "problems": [{ "message": e.to_string() }], "warnings": [] })
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // The same rules as start and reload (policy::build): a fatal problem refuses the
    // config; a skipped line (skip_invalid_lines = true) is reported and accepted.
    let mut outcome = policy::build(&cfg, 1);
    // Files in the order the config names them, each from top to bottom, so an admin
    // can walk them (the guard's refusals used to come after a list's other problems).
    let mut first_seen: Vec<std::path::PathBuf> = Vec::new();
    for p in &outcome.problems {
        if !first_seen.contains(&p.at.path) {
            first_seen.push(p.at.path.clone());
        }
    }
    let file_rank = |path: &std::path::PathBuf| first_seen.iter().position(|f| f == path);
    outcome
        .problems
        .sort_by_key(|p| (file_rank(&p.at.path), p.at.line));
    let fatal = outcome
        .problems
        .iter()
        .filter(|p| p.severity == policy::Severity::Fatal)
        .count();
    let ok = outcome.policy.is_some() && fatal == 0;
    if json {
        let problems: Vec<serde_json::Value> = outcome
            .problems
            .iter()
            .map(|p| {
                serde_json::json!({
                    "file": telesink::config::normalized(&p.at.path),
                    "line": p.at.line,
                    "message": p.message,
                    "skipped": p.severity == policy::Severity::SkippedLine,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "ok": ok,
                "config": path,
                "problems": problems,
                "warnings": outcome.warnings,
                "names": outcome.policy.as_ref().map_or(0, |p| p.total_names()),
            }))
            .unwrap_or_default()
        );
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    for p in &outcome.problems {
        match p.severity {
            policy::Severity::Fatal => eprintln!("{p}"),
            policy::Severity::SkippedLine => eprintln!("warning: {p} (skipped)"),
        }
    }
    for w in &outcome.warnings {
        eprintln!("warning: {w}");
    }
    match (&outcome.policy, ok) {
        (Some(policy), true) => {
            println!(
                "{}: ok ({} profiles, {} lists, {} names{})",
                path.display(),
                policy.profiles.len(),
                policy.lists.len(),
                policy.total_names(),
                match outcome.skipped_lines() {
                    0 => String::new(),
                    n => format!("; {n} invalid lines skipped"),
                }
            );
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{}: {fatal} problem(s)", path.display());
            ExitCode::FAILURE
        }
    }
}

/// What a firewall command did: text for the admin, JSON for scripts; or why it failed.
type FwResult = Result<(String, serde_json::Value), String>;

fn firewall(
    action: FirewallAction,
    config: &std::path::Path,
    socket: Option<PathBuf>,
    json: bool,
) -> ExitCode {
    let result = match action {
        FirewallAction::Show => firewall_show(config),
        FirewallAction::Apply => firewall_apply(config, socket),
        FirewallAction::Counters => firewall_counters(config),
        FirewallAction::Remove => firewall_remove(config, socket),
    };
    use std::io::Write;
    let written = match &result {
        Ok((_, v)) if json => writeln!(
            std::io::stdout().lock(),
            "{}",
            serde_json::to_string_pretty(v).unwrap_or_default()
        ),
        // `firewall show | head` closes the pipe early: the reader's choice, no error.
        Ok((text, _)) => write!(std::io::stdout().lock(), "{text}"),
        Err(e) if json => writeln!(
            std::io::stdout().lock(),
            "{}",
            serde_json::json!({ "error": e })
        ),
        Err(e) => writeln!(std::io::stderr(), "telesink: {e}"),
    };
    if let Err(e) = written
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("telesink: {e}");
        return ExitCode::FAILURE;
    }
    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The config's policy with the saved toggles: what a start would serve, so `firewall
/// show`, `counters` and `explain --offline` describe the table `firewall apply` installs.
fn booted_policy(path: &std::path::Path) -> Result<(LoadedConfig, policy::Policy), String> {
    let cfg = LoadedConfig::load(path).map_err(|e| e.to_string())?;
    let (policy, _) = telesink::apply::boot_policy(&cfg).map_err(|e| e.to_string())?;
    Ok((cfg, policy))
}

fn firewall_show(path: &std::path::Path) -> FwResult {
    use telesink::firewall::plan::{SetKind, addr};
    let (cfg, policy) = booted_policy(path)?;
    let plan = telesink::firewall::plan(&policy, &cfg.config.firewall);
    let sets: Vec<serde_json::Value> = plan
        .sets
        .iter()
        .map(|s| {
            let (kind, elements): (&str, Vec<String>) = match &s.kind {
                SetKind::Interval(ranges) => (
                    "interval",
                    ranges
                        .iter()
                        .map(|&(a, b)| {
                            if a == b {
                                addr(s.family, a).to_string()
                            } else {
                                format!("{}-{}", addr(s.family, a), addr(s.family, b))
                            }
                        })
                        .collect(),
                ),
                SetKind::Timed(_) => ("learned", Vec::new()),
                SetKind::Accounting { .. } => ("accounting", Vec::new()),
            };
            serde_json::json!({
                "name": s.name,
                "family": s.family.suffix(),
                "kind": kind,
                "elements": elements,
            })
        })
        .collect();
    let text = plan.to_string();
    let value = serde_json::json!({
        "table": format!("inet {}", telesink::firewall::plan::TABLE),
        "firewall": cfg.config.firewall.enabled,
        "sets": sets,
        "rules": plan.rules.len(),
        "nft": text,
    });
    Ok((text, value))
}

/// Never replaces a running daemon's table behind its back: with a daemon reachable it
/// asks the daemon to install its own snapshot again; otherwise (early boot) it builds
/// the same snapshot the daemon would start with and installs it.
fn firewall_apply(path: &std::path::Path, socket: Option<PathBuf>) -> FwResult {
    let args = SocketArgs {
        socket,
        config: path.to_owned(),
        json: false,
    };
    match ctl::call(&args, "POST", "/v1/firewall/apply", None) {
        Ok(v) => {
            let text = format!(
                "asked the running daemon: its table (policy generation {}, firewall {}) installed again\n",
                v.get("generation").and_then(|g| g.as_u64()).unwrap_or(0),
                v.get("firewall").and_then(|f| f.as_str()).unwrap_or("?")
            );
            return Ok((
                text,
                serde_json::json!({ "applied": true, "by": "the running daemon", "daemon": v }),
            ));
        }
        Err(
            telesink::control::client::ClientError::Connect { .. }
            | telesink::control::client::ClientError::BrokenConfig { .. },
        ) => {}
        Err(e) => return Err(format!("the running daemon refused: {e}")),
    }
    let cfg = LoadedConfig::load(path).map_err(|e| e.to_string())?;
    let what = telesink::apply::apply_offline(cfg).map_err(|e| e.to_string())?;
    Ok((
        format!("{what}\n"),
        serde_json::json!({ "applied": true, "by": "this command", "detail": what }),
    ))
}

fn firewall_remove(path: &std::path::Path, socket: Option<PathBuf>) -> FwResult {
    let args = SocketArgs {
        socket,
        config: path.to_owned(),
        json: false,
    };
    if let Ok(v) = ctl::call(&args, "GET", "/v1/status", None) {
        return Err(format!(
            "telesink is running (generation {}, config {}): it would put the table back at once. To run without the firewall set firewall.enabled = false and `telesink reload` (the table is removed then), or stop telesink first (on_exit decides whether the table stays)",
            v.get("generation").and_then(|g| g.as_u64()).unwrap_or(0),
            v.get("config").and_then(|c| c.as_str()).unwrap_or("?")
        ));
    }
    telesink::firewall::netlink::remove().map_err(|e| e.to_string())?;
    Ok((
        format!(
            "table inet {} removed (if it was there)\n",
            telesink::firewall::plan::TABLE
        ),
        serde_json::json!({ "removed": true }),
    ))
}

fn firewall_counters(path: &std::path::Path) -> FwResult {
    use telesink::firewall::plan::SetKind;
    let (cfg, policy) = booted_policy(path)?;
    if !telesink::firewall::netlink::table_exists().map_err(|e| e.to_string())? {
        return Err(format!(
            "there is no table inet {} in the kernel, so no counters: the firewall is not programmed here (start the daemon, or telesink firewall apply)",
            telesink::firewall::plan::TABLE
        ));
    }
    let plan = telesink::firewall::plan(&policy, &cfg.config.firewall);
    let (mut text, mut rows) = (String::new(), Vec::new());
    for set in plan
        .sets
        .iter()
        .filter(|s| matches!(s.kind, SetKind::Accounting { .. }))
    {
        let counts = telesink::firewall::netlink::read_accounting(&set.name, set.family)
            .map_err(|e| format!("{}: {e}", set.name))?;
        for c in counts {
            text.push_str(&format!(
                "set={} client={} packets={} bytes={}\n",
                set.name, c.client, c.packets, c.bytes
            ));
            rows.push(serde_json::json!({
                "set": set.name, "client": c.client, "packets": c.packets, "bytes": c.bytes,
            }));
        }
    }
    Ok((text, serde_json::json!({ "counters": rows })))
}

fn explain(
    path: &std::path::Path,
    name: &str,
    client: std::net::IpAddr,
    json: bool,
    socket: Option<PathBuf>,
    offline: bool,
) -> ExitCode {
    // The running daemon's answer includes runtime toggles; without a daemon (or with
    // --offline) the config on disk is evaluated, and the output says so.
    if !offline {
        let args = SocketArgs {
            socket,
            config: path.to_owned(),
            json,
        };
        let body = serde_json::json!({ "name": name, "client": client });
        match ctl::call(&args, "POST", "/v1/explain", Some(&body)) {
            Ok(v) => return ctl::print(&args, &v, ctl::explanation),
            Err(
                telesink::control::client::ClientError::Connect { .. }
                | telesink::control::client::ClientError::BrokenConfig { .. },
            ) => {
                eprintln!(
                    "(the daemon is not reachable: evaluating {} offline)",
                    path.display()
                );
            }
            Err(e) => {
                eprintln!("telesink: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    // With the saved toggles, as a start would serve it.
    let (_, policy) = match booted_policy(path) {
        Ok(both) => both,
        Err(e) => {
            eprintln!("telesink: {e}");
            return ExitCode::FAILURE;
        }
    };
    let e = match policy::explain(&policy, name, client) {
        Ok(e) => e,
        Err(err) => {
            eprintln!("telesink: {err}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        match serde_json::to_string_pretty(&e) {
            Ok(text) => println!("{text}"),
            Err(err) => {
                eprintln!("{err}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{e}");
    }
    ExitCode::SUCCESS
}
