//! `telesink update-m365`: the Microsoft 365 allow set and the Required names, current.
//!
//! Microsoft publishes its Microsoft 365 endpoints as JSON (the endpoints web service,
//! worldwide instance) with a version number, and changes them monthly. The firewall's
//! accept set (`allow-m365-core.cidrs`: the Required ranges of the Optimize and Allow
//! categories) and the names `check` warns about (`m365-required.domains`: every Required
//! URL) are regenerated from it, written next to the config (`<config dir>/blocklists/`,
//! which the list search path reads before the shipped lists), validated by the same
//! compiler as start, `check` and reload, and a running daemon reloads them.
//!
//! A document that does not parse, or that would shrink the accept set by more than half
//! (a truncated download, a changed format), is refused and nothing changes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::config::LoadedConfig;

pub const ALLOW_FILE: &str = "allow-m365-core.cidrs";
pub const REQUIRED_FILE: &str = "m365-required.domains";
/// Microsoft's endpoints web service.
pub const DEFAULT_SERVICE: &str = "https://endpoints.office.com";
/// The largest document read (the worldwide one is about 100 KB).
const MAX_DOCUMENT: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum M365Error {
    #[error("cannot fetch {url}: {why}")]
    Fetch { url: String, why: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse the endpoint data from {source_name}: {why}; nothing changed")]
    Parse { source_name: String, why: String },
    #[error(
        "the new allow set has {new} entries where {current} has {old}: it would shrink by more than half (a truncated or changed document?); nothing changed (--force installs it anyway)"
    )]
    Shrinks {
        new: usize,
        old: usize,
        current: String,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the regenerated lists do not compile, the previous ones are back; nothing changed:\n{0}"
    )]
    Invalid(String),
}

/// One entry of the endpoints document (fields Microsoft documents; others ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Endpoint {
    id: u32,
    service_area: String,
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    ips: Vec<String>,
    category: Category,
    #[serde(default)]
    required: bool,
}

#[derive(Debug, Clone, Copy, Deserialize)]
enum Category {
    Optimize,
    Allow,
    Default,
}

#[derive(Debug, Deserialize)]
struct VersionDoc {
    latest: String,
}

/// The regenerated data.
#[derive(Debug)]
pub struct Update {
    pub version: String,
    pub source: String,
    /// Range -> the comment naming where Microsoft lists it.
    pub allow: BTreeMap<IpNet, String>,
    /// Name (`name` or `*.name`) -> comment.
    pub required: BTreeMap<String, String>,
    /// Required URLs no list rule can express (a wildcard inside a label), left out.
    pub inexpressible: Vec<String>,
}

/// Where the data comes from.
pub enum Source {
    /// The web service at this base address (`https://endpoints.office.com`).
    Service(String),
    /// A saved endpoints document, for gateways without access to the service.
    File {
        path: PathBuf,
        version: Option<String>,
    },
}

impl Source {
    /// A `--from` value: an http(s) address is the service, anything else a file.
    pub fn parse(from: Option<&str>, version: Option<String>) -> Source {
        match from {
            None => Source::Service(DEFAULT_SERVICE.to_owned()),
            Some(u) if u.starts_with("https://") || u.starts_with("http://") => {
                Source::Service(u.trim_end_matches('/').to_owned())
            }
            Some(f) => Source::File {
                path: PathBuf::from(f),
                version,
            },
        }
    }
}

/// Reads the version and the endpoints document.
pub fn fetch(source: &Source) -> Result<Update, M365Error> {
    match source {
        Source::Service(base) => {
            let request_id = format!("{:032x}", rand::random::<u128>());
            let version_url = format!("{base}/version/worldwide?clientrequestid={request_id}");
            let endpoints_url = format!("{base}/endpoints/worldwide?clientrequestid={request_id}");
            let version_text = get(&version_url)?;
            let version: VersionDoc =
                serde_json::from_str(&version_text).map_err(|e| M365Error::Parse {
                    source_name: version_url.clone(),
                    why: e.to_string(),
                })?;
            let body = get(&endpoints_url)?;
            parse(&body, &version.latest, base)
        }
        Source::File { path, version } => {
            let body = std::fs::read_to_string(path).map_err(|source| M365Error::Read {
                path: path.clone(),
                source,
            })?;
            let version = version
                .clone()
                .unwrap_or_else(|| "unknown (give it with --version)".to_owned());
            parse(&body, &version, &path.display().to_string())
        }
    }
}

fn get(url: &str) -> Result<String, M365Error> {
    let fail = |why: String| M365Error::Fetch {
        url: url.to_owned(),
        why,
    };
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .proxy(ureq::Proxy::try_from_env())
        .tls_config(tls)
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    response
        .body_mut()
        .with_config()
        .limit(MAX_DOCUMENT)
        .read_to_string()
        .map_err(|e| fail(e.to_string()))
}

/// The Required ranges of the Optimize and Allow categories, and every Required URL.
pub fn parse(body: &str, version: &str, source: &str) -> Result<Update, M365Error> {
    let bad = |why: String| M365Error::Parse {
        source_name: source.to_owned(),
        why,
    };
    // The service's versions are YYYYMMDDNN; a file without `--version` says "unknown".
    let dated = version.len() == 10 && version.bytes().all(|b| b.is_ascii_digit());
    if !dated && !version.starts_with("unknown") {
        return Err(bad(format!(
            "version {version:?} is not of the form YYYYMMDDNN"
        )));
    }
    let endpoints: Vec<Endpoint> = serde_json::from_str(body).map_err(|e| bad(e.to_string()))?;
    if endpoints.is_empty() {
        return Err(bad("the document lists no endpoints".to_owned()));
    }
    let mut update = Update {
        version: version.to_owned(),
        source: source.to_owned(),
        allow: BTreeMap::new(),
        required: BTreeMap::new(),
        inexpressible: Vec::new(),
    };
    for e in endpoints.iter().filter(|e| e.required) {
        let category = format!("{:?}", e.category);
        if matches!(e.category, Category::Optimize | Category::Allow) {
            for ip in &e.ips {
                let net = ip
                    .parse::<IpNet>()
                    .or_else(|_| ip.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| bad(format!("entry {}: {ip:?} is not an address range", e.id)))?;
                update.allow.entry(net.trunc()).or_insert_with(|| {
                    format!("MS-M365 ID{} {category}/Required {}", e.id, e.service_area)
                });
            }
        }
        for url in &e.urls {
            let name = url.trim().to_ascii_lowercase();
            match crate::policy::runtime::normalize(&name) {
                Ok(n) => {
                    update.required.entry(n).or_insert_with(|| {
                        format!(
                            "MS-M365 ID{} {category}/Required ({})",
                            e.id, e.service_area
                        )
                    });
                }
                Err(_) => update.inexpressible.push(name),
            }
        }
    }
    if update.allow.is_empty() {
        return Err(bad(
            "no Required range of the Optimize or Allow category in it".to_owned(),
        ));
    }
    Ok(update)
}

impl Update {
    pub fn render_allow(&self, today: &str) -> String {
        let mut out = format!(
            "# telesink list: allow-m365-core (always on, firewall accept set)
#
# Purpose:
#   Microsoft 365 Allow/Optimize Required ranges, accepted before any block set.
# What breaks when enabled:
#   Nothing: an accept set only lets traffic through.
# Sources (tags after each entry; key in docs/PROFILES.md): MS-M365
# Date of the data: v{} (Microsoft 365 endpoints web service, worldwide instance)
# Written by `telesink update-m365` on {today} from {}: {} ranges.
# Syntax: one IPv4 or IPv6 address or CIDR per line; '#' starts a comment.

",
            self.version,
            self.source,
            self.allow.len()
        );
        for (net, why) in &self.allow {
            out += &format!("{net}  # {why}\n");
        }
        out
    }

    pub fn render_required(&self, today: &str) -> String {
        let mut out = format!(
            "# telesink list: m365-required (policy.required: what `telesink check` warns about)
#
# Purpose:
#   Names Microsoft's Microsoft 365 endpoint data marks Required. Not an allowlist and not
#   a block list: `telesink check` (and every start and reload) warns about each one that
#   a profile which is on would block, unless that profile's `warning` names it.
# What breaks when enabled:
#   Nothing; it only produces warnings.
# Sources (tags after each entry; key in docs/PROFILES.md): MS-M365
# Date of the data: M365 v{} (Microsoft 365 endpoints web service, worldwide instance)
# Written by `telesink update-m365` on {today} from {}: {} names.
# Syntax: 'name' = exact; '*.name' = name and every subdomain; '#' starts a comment.
",
            self.version,
            self.source,
            self.required.len()
        );
        if !self.inexpressible.is_empty() {
            out += &format!(
                "# Left out, a wildcard inside a label no rule can express: {}\n",
                self.inexpressible.join(", ")
            );
        }
        out += "\n";
        for (name, why) in &self.required {
            out += &format!("{name}  # {why}\n");
        }
        out
    }
}

/// What `install` did.
#[derive(Debug)]
pub struct Installed {
    pub allow_path: PathBuf,
    pub required_path: PathBuf,
    pub ranges: usize,
    /// Entries of the allow set in force before, and where it was read.
    pub previous: Option<(usize, PathBuf)>,
    pub names: usize,
    /// The config does not use the files (not in `firewall.allow_cidrs`/`policy.required`).
    pub unused: Vec<&'static str>,
}

/// Entries of a list file (lines that are neither blank nor comments).
fn entries(path: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .count(),
    )
}

/// Writes the two lists into `dir` (default `<config dir>/blocklists`), refusing a shrink
/// by more than half unless `force`, and keeps them only if the config still compiles.
pub fn install(
    cfg: &LoadedConfig,
    update: &Update,
    dir: Option<&Path>,
    force: bool,
    today: &str,
) -> Result<Installed, M365Error> {
    let base = cfg.base_dir();
    let dir = dir.map_or_else(|| base.join("blocklists"), Path::to_path_buf);
    let search = crate::policy::list_search_path(&base, &cfg.config.policy.lists_dir);
    let previous = search
        .iter()
        .map(|d| d.join(ALLOW_FILE))
        .find(|p| p.exists())
        .and_then(|p| Some((entries(&p)?, p)));
    if let Some((old, current)) = &previous
        && !force
        && update.allow.len() * 2 < *old
    {
        return Err(M365Error::Shrinks {
            new: update.allow.len(),
            old: *old,
            current: current.display().to_string(),
        });
    }
    std::fs::create_dir_all(&dir).map_err(|source| M365Error::Write {
        path: dir.clone(),
        source,
    })?;
    let allow_path = dir.join(ALLOW_FILE);
    let required_path = dir.join(REQUIRED_FILE);
    let backups = [&allow_path, &required_path].map(|p| std::fs::read(p).ok());
    write_atomic(&allow_path, &update.render_allow(today))?;
    write_atomic(&required_path, &update.render_required(today))?;
    let outcome = crate::policy::build(cfg, 0);
    if outcome.policy.is_none() {
        for (path, old) in [&allow_path, &required_path].iter().zip(backups) {
            let _ = match old {
                Some(bytes) => std::fs::write(path, bytes),
                None => std::fs::remove_file(path),
            };
        }
        let problems: Vec<String> = outcome.problems.iter().map(|p| p.to_string()).collect();
        return Err(M365Error::Invalid(problems.join("\n")));
    }
    let named =
        |p: &toml::Spanned<PathBuf>, file: &str| p.get_ref().file_name().is_some_and(|n| n == file);
    let mut unused = Vec::new();
    if !cfg
        .config
        .firewall
        .allow_cidrs
        .iter()
        .any(|p| named(p, ALLOW_FILE))
    {
        unused.push("firewall.allow_cidrs");
    }
    if !cfg
        .config
        .policy
        .required
        .iter()
        .any(|p| named(p, REQUIRED_FILE))
    {
        unused.push("policy.required");
    }
    Ok(Installed {
        allow_path,
        required_path,
        ranges: update.allow.len(),
        previous,
        names: update.required.len(),
        unused,
    })
}

fn write_atomic(path: &Path, text: &str) -> Result<(), M365Error> {
    let tmp = path.with_extension("tmp-update-m365");
    let err = |source| M365Error::Write {
        path: path.to_owned(),
        source,
    };
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"[
      {"id": 1, "serviceArea": "Exchange", "urls": ["outlook.office.com", "*.protection.outlook.com"],
       "ips": ["13.107.6.152/31", "2603:1006::/40"], "tcpPorts": "80,443", "category": "Optimize", "required": true},
      {"id": 9, "serviceArea": "Exchange", "ips": ["40.92.0.0/15"], "category": "Allow", "required": true},
      {"id": 12, "serviceArea": "Exchange", "urls": ["*-files.sharepoint.com"], "ips": ["52.100.0.0/14"], "category": "Default", "required": true},
      {"id": 99, "serviceArea": "Common", "urls": ["optional.example"], "ips": ["192.0.2.0/24"], "category": "Allow", "required": false}
    ]"#;

    #[test]
    fn required_ranges_of_optimize_and_allow_and_every_required_name() {
        let u = parse(DOC, "2025013000", "test").unwrap();
        let nets: Vec<String> = u.allow.keys().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["13.107.6.152/31", "40.92.0.0/15", "2603:1006::/40"]);
        let names: Vec<&str> = u.required.keys().map(String::as_str).collect();
        assert_eq!(names, ["*.protection.outlook.com", "outlook.office.com"]);
        assert_eq!(u.inexpressible, ["*-files.sharepoint.com"]);
        assert!(
            u.render_allow("2026-12-01")
                .contains("13.107.6.152/31  # MS-M365 ID1 Optimize/Required Exchange")
        );
    }

    #[test]
    fn malformed_documents_are_refused_with_why() {
        for (doc, why) in [
            ("[{\"id\": 1", "EOF"),
            ("{}", "expected a sequence"),
            ("[]", "no endpoints"),
            (
                r#"[{"id": 1, "serviceArea": "X", "ips": ["300.1.1.1/8"], "category": "Allow", "required": true}]"#,
                "not an address range",
            ),
            (
                r#"[{"id": 1, "serviceArea": "X", "ips": ["10.0.0.0/8"], "category": "Sometimes", "required": true}]"#,
                "unknown variant",
            ),
        ] {
            let e = parse(doc, "2025013000", "t").unwrap_err().to_string();
            assert!(e.contains(why), "{doc}: {e}");
        }
        assert!(
            parse(DOC, "latest", "t")
                .unwrap_err()
                .to_string()
                .contains("YYYYMMDDNN")
        );
    }
}
