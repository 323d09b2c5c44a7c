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
//!
//! The document is data from outside, and what it says ends up in the firewall's accept
//! set, which is matched before every block set: one entry of `0.0.0.0/0` would switch
//! the egress firewall off. So every field is validated before anything is rendered
//! (`validate_*` below): no control characters anywhere, service areas of plain words,
//! names that are host names or one of the wildcard forms Microsoft documents, ranges no
//! broader than `MAX_PREFIX_V4`/`MAX_PREFIX_V6` unless `--allow-broad` (said in the
//! output), and a document of at most `MAX_DOCUMENT` bytes. Comments are rendered through
//! `comment()`, which cannot produce a line break whatever it is given.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::config::LoadedConfig;
use crate::dns::upstream::lookup::Lookup;

pub const ALLOW_FILE: &str = "allow-m365-core.cidrs";
pub const REQUIRED_FILE: &str = "m365-required.domains";
/// Microsoft's endpoints web service.
pub const DEFAULT_SERVICE: &str = "https://endpoints.office.com";
/// The largest document read, from the service or a file (the worldwide one is about
/// 100 KB; 4 MiB leaves room for forty times that).
pub const MAX_DOCUMENT: u64 = 4 << 20;
/// The broadest Required range accepted without `--allow-broad`: the accept set's bound
/// (`policy::too_broad`), the same that `check` applies to every accept list.
pub use crate::policy::{
    MAX_ACCEPT_PREFIX_V4 as MAX_PREFIX_V4, MAX_ACCEPT_PREFIX_V6 as MAX_PREFIX_V6, too_broad,
};
/// The longest service area name (Microsoft's are "Exchange", "SharePoint", "Skype",
/// "Common").
const MAX_SERVICE_AREA: usize = 64;

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
        "refusing the endpoint data from {source_name}: {why}; nothing changed (the document is not what Microsoft publishes: a tampered or damaged copy?)"
    )]
    Invalid { source_name: String, why: String },
    #[error(
        "refusing the endpoint data from {source_name}: entry {id} lists {net}, broader than /{bound}: an accept set of that size would let most of the Internet past the block sets; nothing changed (--allow-broad installs it anyway, with a warning)"
    )]
    Broad {
        source_name: String,
        id: u32,
        net: IpNet,
        bound: u8,
    },
    #[error(
        "{path} is larger than {max} bytes (the worldwide document is about 100 KB): not an endpoints document; nothing changed"
    )]
    TooLarge { path: PathBuf, max: u64 },
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
    Uncompilable(String),
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
    /// Ranges broader than the bound, kept because `--allow-broad` was given: each is
    /// said in the output as a warning.
    pub broad: Vec<IpNet>,
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

/// Reads the version and the endpoints document. `allow_broad` keeps ranges broader than
/// the bound (and lists them in `Update::broad`) instead of refusing the document.
/// `lookup`: the daemon's upstreams for the service's name (None: the system resolver,
/// for tests and tools without a config).
pub fn fetch(
    source: &Source,
    allow_broad: bool,
    lookup: Option<Arc<Lookup>>,
) -> Result<Update, M365Error> {
    match source {
        Source::Service(base) => {
            let request_id = format!("{:032x}", rand::random::<u128>());
            let version_url = format!("{base}/version/worldwide?clientrequestid={request_id}");
            let endpoints_url = format!("{base}/endpoints/worldwide?clientrequestid={request_id}");
            let version_text = get(&version_url, lookup.clone())?;
            let version: VersionDoc =
                serde_json::from_str(&version_text).map_err(|e| M365Error::Parse {
                    source_name: version_url.clone(),
                    why: e.to_string(),
                })?;
            let body = get(&endpoints_url, lookup)?;
            parse(&body, &version.latest, base, allow_broad)
        }
        Source::File { path, version } => {
            // The endpoints document does not carry its version (the service's
            // /version/worldwide does); a list header without one would not say what
            // data the accept set is.
            let Some(version) = version else {
                return Err(M365Error::Parse {
                    source_name: path.display().to_string(),
                    why: "a saved endpoints document does not say its version: give it with --version YYYYMMDDNN (the \"latest\" of https://endpoints.office.com/version/worldwide when it was downloaded)".to_owned(),
                });
            };
            let body = read_capped(path)?;
            parse(&body, version, &path.display().to_string(), allow_broad)
        }
    }
}

/// A saved document, refused past `MAX_DOCUMENT` bytes without reading the rest.
fn read_capped(path: &Path) -> Result<String, M365Error> {
    use std::io::Read;
    let read = |source| M365Error::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut body = String::new();
    file.take(MAX_DOCUMENT + 1)
        .read_to_string(&mut body)
        .map_err(read)?;
    if body.len() as u64 > MAX_DOCUMENT {
        return Err(M365Error::TooLarge {
            path: path.to_owned(),
            max: MAX_DOCUMENT,
        });
    }
    Ok(body)
}

/// Resolves the service's name through telesink's upstreams.
struct ViaUpstreams(Arc<Lookup>);

impl std::fmt::Debug for ViaUpstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("telesink's upstreams")
    }
}

impl ureq::unversioned::resolver::Resolver for ViaUpstreams {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let authority = uri.authority().ok_or(ureq::Error::HostNotFound)?;
        let port = authority
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("http") {
                80
            } else {
                443
            });
        let ips = self
            .0
            .addresses(authority.host())
            .map_err(|why| ureq::Error::Other(why.into()))?;
        let mut out = self.empty();
        for ip in ips.into_iter().take(16) {
            out.push(std::net::SocketAddr::new(ip, port));
        }
        Ok(out)
    }
}

fn get(url: &str, lookup: Option<Arc<Lookup>>) -> Result<String, M365Error> {
    let fail = |why: String| M365Error::Fetch {
        url: url.to_owned(),
        why,
    };
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .proxy(ureq::Proxy::try_from_env())
        .tls_config(tls)
        .build();
    let agent = match lookup {
        Some(l) => ureq::Agent::with_parts(
            config,
            ureq::unversioned::transport::DefaultConnector::default(),
            ViaUpstreams(l),
        ),
        None => config.into(),
    };
    let mut response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    response
        .body_mut()
        .with_config()
        .limit(MAX_DOCUMENT)
        .read_to_string()
        .map_err(|e| fail(e.to_string()))
}

/// The Required ranges of the Optimize and Allow categories, and every Required URL,
/// each field validated (the module comment says why).
pub fn parse(
    body: &str,
    version: &str,
    source: &str,
    allow_broad: bool,
) -> Result<Update, M365Error> {
    let bad = |why: String| M365Error::Parse {
        source_name: source.to_owned(),
        why,
    };
    let invalid = |why: String| M365Error::Invalid {
        source_name: source.to_owned(),
        why,
    };
    // The service's versions are YYYYMMDDNN.
    let dated = version.len() == 10 && version.bytes().all(|b| b.is_ascii_digit());
    if !dated {
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
        broad: Vec::new(),
    };
    for e in endpoints.iter().filter(|e| e.required) {
        let area = validate_service_area(&e.service_area)
            .map_err(|why| invalid(format!("entry {}: {why}", e.id)))?;
        let category = format!("{:?}", e.category);
        if matches!(e.category, Category::Optimize | Category::Allow) {
            for ip in &e.ips {
                let net =
                    validate_range(ip).map_err(|why| invalid(format!("entry {}: {why}", e.id)))?;
                if let Some(bound) = too_broad(net) {
                    if !allow_broad {
                        return Err(M365Error::Broad {
                            source_name: source.to_owned(),
                            id: e.id,
                            net,
                            bound,
                        });
                    }
                    update.broad.push(net);
                }
                update
                    .allow
                    .entry(net)
                    .or_insert_with(|| format!("MS-M365 ID{} {category}/Required {area}", e.id));
            }
        }
        for url in &e.urls {
            match validate_url(url).map_err(|why| invalid(format!("entry {}: {why}", e.id)))? {
                Url::Rule(n) => {
                    update.required.entry(n).or_insert_with(|| {
                        format!("MS-M365 ID{} {category}/Required ({area})", e.id)
                    });
                }
                Url::Inexpressible(n) => update.inexpressible.push(n),
            }
        }
    }
    if update.allow.is_empty() {
        return Err(bad(
            "no Required range of the Optimize or Allow category in it".to_owned(),
        ));
    }
    update.broad.sort();
    update.broad.dedup();
    update.inexpressible.sort();
    update.inexpressible.dedup();
    Ok(update)
}

/// A service area: a plain word or two (letters, digits, ' ', '-', '_', '.').
fn validate_service_area(area: &str) -> Result<&str, String> {
    let fine = !area.trim().is_empty()
        && area.len() <= MAX_SERVICE_AREA
        && area
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" -_.".contains(&b));
    match fine {
        true => Ok(area.trim()),
        false => Err(format!(
            "serviceArea {area:?} is not a service area name (at most {MAX_SERVICE_AREA} letters, digits, spaces, '-', '_' or '.')"
        )),
    }
}

/// An address range as Microsoft writes them (CIDR, or a single address), canonical.
fn validate_range(text: &str) -> Result<IpNet, String> {
    let net = text
        .parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an address range"))?;
    Ok(net.trunc())
}

/// What a Required URL becomes.
enum Url {
    /// A list rule: `name` or `*.name`.
    Rule(String),
    /// A wildcard inside a label (`*-files.sharepoint.com`, `autodiscover.*.onmicrosoft.com`),
    /// which no list rule can express: said, left out.
    Inexpressible(String),
}

/// A Required URL: a host name, `*.` and a host name, or a host name with `*` inside;
/// anything else (spaces, control characters, '#', '/', ':') refuses the document.
fn validate_url(url: &str) -> Result<Url, String> {
    let name = url.trim().to_ascii_lowercase();
    let plain = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.*".contains(&b));
    if !plain {
        return Err(format!(
            "url {url:?} is not a host name or a wildcard of one (letters, digits, '-', '_', '.', '*')"
        ));
    }
    match crate::policy::runtime::normalize(&name) {
        // The rule must read back from a list line as itself: an address ("0.0.0.0")
        // is a hosts-file line there, not a name.
        Ok(rule) if reads_back_as(&rule) => Ok(Url::Rule(rule)),
        Ok(_) => Err(format!("url {url:?} is not a host name")),
        Err(_) if name.contains('*') => Ok(Url::Inexpressible(name)),
        Err(_) => Err(format!("url {url:?} is not a host name")),
    }
}

/// Whether a list line holding only `rule` gives exactly that rule back.
fn reads_back_as(rule: &str) -> bool {
    let mut entries = Vec::new();
    if crate::lists::parse_line(rule, &mut entries).is_err() {
        return false;
    }
    match entries.as_slice() {
        [e] if !e.allow => {
            let read = match e.reach {
                crate::lists::Reach::Suffix => format!("*.{}", e.name),
                crate::lists::Reach::Exact => e.name.to_string(),
            };
            read == rule
        }
        _ => false,
    }
}

/// Text for a `#` comment: whatever it is given, it cannot end the line (validation
/// already refuses such input; this holds even if that ever changes).
fn comment(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                '?'
            } else {
                c
            }
        })
        .collect()
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
            comment(&self.version),
            comment(&self.source),
            self.allow.len()
        );
        if !self.broad.is_empty() {
            out += &format!(
                "# Broader than /{MAX_PREFIX_V4} or /{MAX_PREFIX_V6}, kept with --allow-broad: {}\n\n",
                self.broad
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for (net, why) in &self.allow {
            out += &format!("{net}  # {}\n", comment(why));
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
            comment(&self.version),
            comment(&self.source),
            self.required.len()
        );
        if !self.inexpressible.is_empty() {
            out += &format!(
                "# Left out, a wildcard inside a label no rule can express: {}\n",
                comment(&self.inexpressible.join(", "))
            );
        }
        out += "\n";
        for (name, why) in &self.required {
            out += &format!("{name}  # {}\n", comment(why));
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
        return Err(M365Error::Uncompilable(problems.join("\n")));
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
    crate::durable::write(path, text.as_bytes()).map_err(|source| M365Error::Write {
        path: path.to_owned(),
        source,
    })
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
        let u = parse(DOC, "2025013000", "test", false).unwrap();
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
            let e = parse(doc, "2025013000", "t", false)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{doc}: {e}");
        }
        assert!(
            parse(DOC, "latest", "t", false)
                .unwrap_err()
                .to_string()
                .contains("YYYYMMDDNN")
        );
    }

    /// The entries of an endpoint document with one Required Allow entry.
    fn doc_with(service_area: &str, urls: &[&str], ips: &[&str]) -> String {
        serde_json::json!([{
            "id": 7, "serviceArea": service_area, "urls": urls, "ips": ips,
            "category": "Allow", "required": true
        }])
        .to_string()
    }

    /// The hostile documents of the security review: each is refused, never rendered.
    #[test]
    fn injected_lines_and_broad_ranges_are_refused() {
        for (doc, why) in [
            (
                doc_with("Exchange\n0.0.0.0/0\n::/0", &[], &["13.107.6.152/31"]),
                "is not a service area name",
            ),
            (
                doc_with(
                    "Exchange",
                    &["outlook.office.com\nexample.org"],
                    &["13.107.6.152/31"],
                ),
                "is not a host name or a wildcard",
            ),
            (
                doc_with("Exchange", &["a.example # x"], &["13.107.6.152/31"]),
                "is not a host name or a wildcard",
            ),
            (
                doc_with("Exchange", &[], &["0.0.0.0/0"]),
                "broader than /12",
            ),
            (doc_with("Exchange", &[], &["::/0"]), "broader than /24"),
            (
                doc_with("Exchange", &[], &["10.0.0.0/8"]),
                "broader than /12",
            ),
            (
                doc_with("Exchange", &[], &["13.107.6.152/31\n0.0.0.0/0"]),
                "is not an address range",
            ),
        ] {
            let e = parse(&doc, "2025013000", "t", false)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{doc}: {e}");
            assert!(e.contains("nothing changed"), "{e}");
        }
        // With --allow-broad a broad range is kept and named in the file's header.
        let u = parse(
            &doc_with("Exchange", &[], &["0.0.0.0/0"]),
            "2025013000",
            "t",
            true,
        )
        .unwrap();
        assert_eq!(u.broad, ["0.0.0.0/0".parse::<IpNet>().unwrap()]);
        assert!(
            u.render_allow("2026-12-07")
                .contains("kept with --allow-broad: 0.0.0.0/0")
        );
    }

    /// A source named with a line break (a file path) cannot end its comment either.
    #[test]
    fn the_source_and_version_in_headers_stay_comments() {
        let u = parse(DOC, "2025013000", "/tmp/x\n0.0.0.0/0\r\n::/0", false).unwrap();
        for text in [u.render_allow("d"), u.render_required("d")] {
            assert!(
                !text
                    .lines()
                    .any(|l| l.starts_with("0.0.0.0/0") || l.starts_with("::/0")),
                "{text}"
            );
        }
    }

    /// A small deterministic generator (xorshift), so the property test needs no crate
    /// and every run sees the same documents.
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[(self.next() % from.len() as u64) as usize]
        }
        /// Mostly one plausible value; otherwise up to three pieces of plausible and
        /// hostile ones, glued together.
        fn text(&mut self, plausible: &[&str], hostile: &[&str]) -> String {
            if self.next() % 10 < 9 {
                return self.pick(plausible).to_owned();
            }
            let n = self.next() % 4;
            (0..n)
                .map(|_| match self.next() % 2 {
                    0 => self.pick(plausible),
                    _ => self.pick(hostile),
                })
                .collect()
        }
    }

    /// Any document is refused, or gives lists whose parse is exactly the validated
    /// input: no field can add, drop or change an entry of the rendered lists.
    #[test]
    fn any_document_is_refused_or_renders_exactly_what_was_validated() {
        const AREAS: &[&str] = &["Exchange", "Share Point", "Common", "Skype-x", "v1.2"];
        const BAD_AREAS: &[&str] = &["\n", "\r", "#", " ", "", "\u{2028}", "é", "0.0.0.0/0", "\t"];
        const NAMES: &[&str] = &[
            "outlook.office.com",
            "*.protection.outlook.com",
            "UPPER.Example",
            "_srv.example.org",
            "*-files.sharepoint.com",
            "autodiscover.*.onmicrosoft.com",
            "a",
            "x-y.example",
        ];
        const BAD_NAMES: &[&str] = &[
            "*.",
            "*",
            ".",
            "\n",
            "#",
            " ",
            "-x",
            "\t",
            "0.0.0.0",
            "::",
            "/",
            "é",
            "\r\n",
            "..",
            "@@",
            "||",
            "^",
            "127.0.0.1",
        ];
        const IPS: &[&str] = &[
            "13.107.6.152/31",
            "40.96.0.0/13",
            "2603:1006::/40",
            "192.0.2.1",
            "2001:db8::/48",
            "10.0.0.0/12",
            "198.51.100.7/24",
            "2001:db8::1",
        ];
        const BAD_IPS: &[&str] = &[
            "0.0.0.0/0",
            "::/0",
            "\n",
            "#",
            " ",
            "/8",
            "2001:db8::/23",
            "10.0.0.0/11",
            "1.2.3.4/33",
        ];
        let dir = std::env::temp_dir().join(format!("telesink-m365-prop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..3_000 {
            let entries: Vec<serde_json::Value> = (0..1 + g.next() % 3)
                .map(|i| {
                    let urls: Vec<String> = (0..g.next() % 3)
                        .map(|_| g.text(NAMES, BAD_NAMES))
                        .collect();
                    let ips: Vec<String> = (0..1 + g.next() % 2)
                        .map(|_| g.text(IPS, BAD_IPS))
                        .collect();
                    serde_json::json!({
                        "id": i, "serviceArea": g.text(AREAS, BAD_AREAS), "urls": urls, "ips": ips,
                        "category": g.pick(&["Allow", "Optimize", "Default"]), "required": true
                    })
                })
                .collect();
            let doc = serde_json::Value::Array(entries).to_string();
            let broad = g.next().is_multiple_of(2);
            let source = g.text(AREAS, BAD_AREAS);
            let Ok(u) = parse(&doc, "2025013000", &source, broad) else {
                refused += 1;
                continue;
            };
            accepted += 1;
            let allow_path = dir.join(format!("{round}.cidrs"));
            let names_path = dir.join(format!("{round}.domains"));
            std::fs::write(&allow_path, u.render_allow("d")).unwrap();
            std::fs::write(&names_path, u.render_required("d")).unwrap();
            let (mut nets, mut names, mut problems) = (Vec::new(), Vec::new(), Vec::new());
            crate::lists::read_cidrs(&allow_path, &mut problems, |n, _| nets.push(n)).unwrap();
            crate::lists::read_list(&names_path, &mut problems, |e, _| {
                names.push(match e.reach {
                    crate::lists::Reach::Suffix => format!("*.{}", e.name),
                    crate::lists::Reach::Exact => e.name.to_string(),
                })
            })
            .unwrap();
            assert!(problems.is_empty(), "{doc}: {problems:?}");
            assert_eq!(nets, u.allow.keys().copied().collect::<Vec<_>>(), "{doc}");
            assert_eq!(
                names,
                u.required.keys().cloned().collect::<Vec<_>>(),
                "{doc}"
            );
            if !broad {
                assert!(nets.iter().all(|n| too_broad(*n).is_none()), "{doc}");
            }
            let _ = std::fs::remove_file(allow_path);
            let _ = std::fs::remove_file(names_path);
        }
        let _ = std::fs::remove_dir_all(&dir);
        // Both sides were exercised, or the test proves nothing.
        assert!(
            accepted > 100 && refused > 100,
            "{accepted} accepted, {refused} refused"
        );
    }
}
