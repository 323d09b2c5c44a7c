//! `telesink fleet ...`: the centre's commands, on any machine that reaches the hub
//! (docs/FLEET.md). The report and verify read the hub's evidence stream; a policy
//! change is checked against the fleet's config (the same file every gateway has) and
//! written to the central key by compare-and-swap; `site add` tells the hub to source a
//! site's evidence.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::hub::{self, HubArgs};
use super::report::{FleetQuery, build};
use crate::apply::Edit;
use crate::config::LoadedConfig;
use crate::evidence::render::ReportFormat;
use crate::policy::Toggle;
use crate::policy::runtime::NameRule;

#[derive(clap::Args)]
pub struct FleetArgs {
    #[command(subcommand)]
    pub action: FleetAction,
    #[command(flatten)]
    pub hub: HubArgs,
}

#[derive(clap::Subcommand)]
pub enum FleetAction {
    /// Every site's evidence over a period, per site, gateway, device, profile, endpoint
    /// and day, with what the evidence does not show (gaps, broken chains).
    Report {
        #[command(flatten)]
        period: Period,
        /// Only this site.
        #[arg(long)]
        site: Option<String>,
        /// Only this gateway.
        #[arg(long)]
        gateway: Option<String>,
        /// Only this client (its label as the gateway's reports show it).
        #[arg(long)]
        client: Option<String>,
        #[arg(long)]
        profile: Option<String>,
        /// Sum by site, gateway, client, name, profile or day (default: every row).
        #[arg(long)]
        by: Option<String>,
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Check every gateway's chain from what it sent, and its ledger's head against it;
    /// exit 0 only when all hold and no record was refused.
    Verify {
        #[command(flatten)]
        period: Period,
    },
    /// Sites: `add NAME` makes the hub source the site's evidence stream.
    Site {
        #[command(subcommand)]
        action: SiteAction,
    },
    /// The central policy now and its history.
    Policy,
    /// Switch a profile for every site (under each site's and gateway's own entries).
    Profile {
        /// enable, disable or reset.
        action: String,
        name: String,
        #[command(flatten)]
        change: CentralChange,
    },
    /// Log-only a profile for every site: on or off.
    LogOnly {
        name: String,
        state: String,
        #[command(flatten)]
        change: CentralChange,
    },
    /// Unblock a name at every site (with --remove: take the central rule away).
    Allow {
        name: String,
        #[arg(long)]
        remove: bool,
        #[command(flatten)]
        change: CentralChange,
    },
    /// Block a name at every site (with --remove: take the central rule away).
    Block {
        name: String,
        #[arg(long)]
        remove: bool,
        #[command(flatten)]
        change: CentralChange,
    },
}

#[derive(clap::Subcommand)]
pub enum SiteAction {
    Add {
        name: String,
        /// The site's JetStream domain (default: the site's name).
        #[arg(long)]
        domain: Option<String>,
        /// Replicas of the hub's streams when this makes them: 3 for a hub of three
        /// servers (an existing stream keeps its own).
        #[arg(long, default_value_t = 1)]
        replicas: usize,
    },
}

#[derive(clap::Args, Clone)]
pub struct Period {
    /// From this day on: YYYY-MM-DD, or 30d for the last 30 days.
    #[arg(long, default_value = "30d")]
    pub since: String,
    /// Up to this day, YYYY-MM-DD (default: today).
    #[arg(long)]
    pub until: Option<String>,
}

#[derive(clap::Args, Clone)]
pub struct CentralChange {
    /// Only for this client group (default: every group).
    #[arg(long)]
    pub group: Option<String>,
    /// Revert by itself after this long: 90s, 30m, 2h, 1d.
    #[arg(long = "for", value_parser = crate::control::client::parse_duration)]
    pub duration: Option<u64>,
    /// Why: kept with the change and in the central policy's history.
    #[arg(long)]
    pub why: Option<String>,
    /// The fleet's config (profiles and groups are checked against it).
    #[arg(long, default_value = "/etc/telesink/telesink.toml")]
    pub config: PathBuf,
}

pub fn run(args: FleetArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start: {e}")),
    };
    match rt.block_on(act(args)) {
        Ok(code) => code,
        Err(e) => fail(e),
    }
}

fn fail(e: String) -> ExitCode {
    eprintln!("telesink fleet: {e}");
    ExitCode::FAILURE
}

fn period(p: &Period) -> Result<(String, String), String> {
    crate::evidence::report::period(&p.since, p.until.as_deref())
}

async fn act(args: FleetArgs) -> Result<ExitCode, String> {
    let js = hub::connect(&args.hub).await?;
    match args.action {
        FleetAction::Report {
            period: p,
            site,
            gateway,
            client,
            profile,
            by,
            format,
            output,
        } => {
            let (since, until) = period(&p)?;
            let gathered = hub::gather(&js, Some((&since, &until))).await?;
            let central = hub::central_history(&js).await?;
            let q = FleetQuery {
                since,
                until,
                site,
                gateway,
                client,
                profile,
                by,
                summary: format == ReportFormat::Html,
            };
            let report = build(&gathered, central, &q).map_err(|e| e.to_string())?;
            let text = match format {
                ReportFormat::Table => report.table(),
                ReportFormat::Csv => report.csv(),
                ReportFormat::Json => report.json(),
                ReportFormat::Html => report.html(),
            };
            write_out(output.as_deref(), &text)?;
            if report.lines_left_out > 0 {
                eprintln!(
                    "telesink fleet: {} lines left out; narrow the period or sum with --by",
                    report.lines_left_out
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        FleetAction::Verify { period: p } => {
            let (since, until) = period(&p)?;
            let gathered = hub::gather(&js, Some((&since, &until))).await?;
            let q = FleetQuery {
                since,
                until,
                summary: true,
                ..Default::default()
            };
            let report = build(&gathered, Vec::new(), &q).map_err(|e| e.to_string())?;
            for g in &report.gateways {
                println!(
                    "{}/{}: {} days sent, {} sealed days chained: {}",
                    g.site,
                    g.gateway,
                    g.days_sent,
                    g.days_verified,
                    if g.verified {
                        "verifies"
                    } else {
                        "DOES NOT VERIFY"
                    }
                );
            }
            for f in &report.findings {
                println!("{}/{}: {}", f.site, f.gateway, f.what);
            }
            for r in &report.refused {
                println!("refused record {} on {}: {}", r.seq, r.subject, r.why);
            }
            Ok(if report.verified() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        FleetAction::Site {
            action:
                SiteAction::Add {
                    name,
                    domain,
                    replicas,
                },
        } => {
            if !crate::config::cluster::valid_name(&name) {
                return Err(format!(
                    "site {name:?}: letters, digits, - and _ (the gateways' [cluster] site)"
                ));
            }
            let domain = domain.unwrap_or_else(|| name.clone());
            if !(1..=5).contains(&replicas) {
                return Err(format!(
                    "--replicas {replicas}: 1 to 5 (3 for a hub of three servers)"
                ));
            }
            let sites =
                super::streams::hub_evidence(&js, &[(name.clone(), domain)], replicas).await?;
            super::streams::central_bucket(&js, replicas).await?;
            println!("the hub sources the evidence of: {}", sites.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        FleetAction::Policy => {
            let history = hub::central_history(&js).await?;
            match history.last() {
                None => println!("no central policy yet: every site enforces its own"),
                Some(last) => {
                    println!("central policy at revision {}:", last.revision);
                    for t in &last.in_force {
                        println!("  {t}");
                    }
                    if last.in_force.is_empty() {
                        println!("  (nothing: every site's config decides)");
                    }
                }
            }
            println!("history:");
            for c in &history {
                println!(
                    "  revision {} at {} by {}: {}",
                    c.revision,
                    crate::clock::utc_time(c.at),
                    c.by,
                    c.what
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        FleetAction::Profile {
            action,
            name,
            change,
        } => {
            let edit = match action.as_str() {
                "enable" | "disable" => Edit::Profile(toggle(&name, action == "enable", &change)),
                "reset" => Edit::Reset {
                    profile: name.clone(),
                    group: change.group.clone(),
                },
                other => return Err(format!("profile {other}: enable, disable or reset")),
            };
            central_edit(&js, edit, &change).await
        }
        FleetAction::LogOnly {
            name,
            state,
            change,
        } => {
            let on = match state.as_str() {
                "on" => true,
                "off" => false,
                other => return Err(format!("log-only {name} {other}: on or off")),
            };
            central_edit(&js, Edit::LogOnly(toggle(&name, on, &change)), &change).await
        }
        FleetAction::Allow {
            name,
            remove,
            change,
        } => central_edit(&js, rule_edit(name, true, remove, &change), &change).await,
        FleetAction::Block {
            name,
            remove,
            change,
        } => central_edit(&js, rule_edit(name, false, remove, &change), &change).await,
    }
}

fn until(change: &CentralChange) -> Option<u64> {
    change.duration.map(|d| crate::clock::unix_now() + d)
}

fn toggle(name: &str, enabled: bool, change: &CentralChange) -> Toggle {
    Toggle {
        profile: name.to_owned(),
        group: change.group.clone(),
        enabled,
        until: until(change),
        by: None,
        why: None,
    }
}

fn rule_edit(name: String, allow: bool, remove: bool, change: &CentralChange) -> Edit {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    match remove {
        true => Edit::Unrule {
            name,
            group: change.group.clone(),
        },
        false => Edit::Rule(NameRule {
            name,
            allow,
            group: change.group.clone(),
            until: until(change),
            by: None,
            why: None,
        }),
    }
}

/// Checks the edit against the fleet's config and writes it to the central key.
async fn central_edit(
    js: &async_nats::jetstream::Context,
    mut edit: Edit,
    change: &CentralChange,
) -> Result<ExitCode, String> {
    let snapshot = fleet_snapshot(&change.config)?;
    // Who: this process's user, as the gateways record a caller ("uid N").
    let uid = std::os::unix::fs::MetadataExt::uid(
        &std::fs::metadata("/proc/self").map_err(|e| e.to_string())?,
    );
    let by = format!("uid {uid} on {} (central)", crate::host::name());
    edit.stamp(by.clone(), change.why.clone());
    let what = edit.to_string();
    let revision = hub::write_central(
        js,
        |toggles| {
            crate::apply::edit_toggles(&snapshot, toggles, edit.clone(), false)
                .map_err(|e| e.to_string())
        },
        by,
        match &change.why {
            Some(w) => format!("{what} ({w})"),
            None => what.clone(),
        },
    )
    .await?;
    println!("{what}");
    println!(
        "central revision {revision}: each site takes it from its mirror (`telesink status` there says where each setting comes from)"
    );
    Ok(ExitCode::SUCCESS)
}

/// The fleet's config as a snapshot to check edits against (its lists are not needed
/// for that, but compiling them is how profiles and groups are known).
fn fleet_snapshot(path: &Path) -> Result<crate::snapshot::Snapshot, String> {
    let cfg = LoadedConfig::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let policy = crate::snapshot::compile(&cfg, 1)?;
    Ok(crate::snapshot::Snapshot::new(
        policy,
        std::sync::Arc::new(cfg),
        None,
    ))
}

fn write_out(output: Option<&Path>, text: &str) -> Result<(), String> {
    match output {
        Some(path) => crate::durable::write(path, text.as_bytes())
            .map_err(|e| format!("--output {}: {e}", path.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
