//! The TOML configuration: schema, defaults and loading with file:line errors.
//!
//! Every struct denies unknown keys, so a typo is an error, never a silently ignored
//! setting (tests/config_unknown_keys.rs inserts a stray key at every table of the shipped
//! config to prove it). Values that refer to something else (a profile named in a group,
//! a list file) are `Spanned`, so the semantic checks in `policy::build` can name the line.

pub mod cluster;
pub mod evidence;
pub mod identity;
pub mod limits;
mod load;
pub mod restart;
pub mod upstream;
pub mod values;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

/// The gid of a group, from /etc/group (no NSS: an appliance's admin group is local); a
/// number is taken as a gid.
pub fn gid_of(group: &str) -> Option<u32> {
    if let Ok(gid) = group.parse() {
        return Some(gid);
    }
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == group).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

pub use evidence::EvidenceConfig;
pub use identity::{DeviceConfig, IdentityConfig};
pub use limits::{RateAction, RateLimitConfig};
pub use load::{ConfigError, LoadedConfig, Location, line_of, normalized};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub upstream: UpstreamConfig,
    /// Zones forwarded to their own servers (Active Directory), most specific first.
    #[serde(default)]
    pub forward: Vec<ForwardConfig>,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub profiles: indexmap_like::OrderedProfiles,
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
    #[serde(default)]
    pub firewall: FirewallConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub control: ControlConfig,
    #[serde(default)]
    pub evidence: EvidenceConfig,
    #[serde(default)]
    pub identity: IdentityConfig,
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// Two gateways, one policy (src/cluster/); absent: one box.
    pub cluster: Option<cluster::ClusterConfig>,
}

/// The local control API (`telesink status`, `profile enable`, ...): a Unix socket only,
/// never TCP, guarded by file permissions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Socket path. Default: $RUNTIME_DIRECTORY/control.sock under systemd, else
    /// /run/telesink/control.sock. Unset and not creatable: telesink runs without it.
    pub socket: Option<PathBuf>,
    /// Group that may use the socket (mode 0660). Default: the daemon's own group.
    pub socket_group: Option<String>,
    /// Runtime toggles, kept across restarts. Default: $STATE_DIRECTORY/state.json under
    /// systemd, else /var/lib/telesink/state.json.
    pub state_file: Option<PathBuf>,
    /// `telesink allow|block` rules at most: every change rebuilds their index, and a
    /// list file is the place for thousands of names.
    #[serde(default = "default_max_runtime_rules")]
    pub max_runtime_rules: usize,
}

fn default_max_runtime_rules() -> usize {
    10_000
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            socket: None,
            socket_group: None,
            state_file: None,
            max_runtime_rules: default_max_runtime_rules(),
        }
    }
}

/// What the `client` label of the per-client metrics shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientLabels {
    /// A configured name (`[[devices]]`, a group's `hosts`), else a lease's host name,
    /// else the device's MAC or the address (docs/METRICS.md, "What a client label is").
    #[default]
    Address,
    /// A configured name, else a keyed hash of the MAC (`m-`) or the address (`h-`),
    /// stable across restarts (for sites that must not expose who is who); lease host
    /// names are not used.
    Pseudonym,
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where /metrics and /health are served; absent: no endpoint.
    pub listen: Option<SocketAddr>,
    /// Client labels at most, kept by recency: one not seen for `[identity]
    /// forget_after_secs` makes room; client="other" only while more are active.
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
    #[serde(default)]
    pub client_labels: ClientLabels,
    /// Key of the pseudonyms; created (random, mode 0600) if missing. Default: next to the
    /// state file, client-label.key.
    pub pseudonym_key_file: Option<PathBuf>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: None,
            max_clients: default_max_clients(),
            client_labels: ClientLabels::default(),
            pseudonym_key_file: None,
        }
    }
}

fn default_max_clients() -> usize {
    1000
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirewallVerdict {
    /// TCP reset for TCP, ICMP admin-prohibited otherwise: clients fail fast.
    #[default]
    Reject,
    Drop,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExit {
    /// Leave the table in place: blocking persists while telesink is down (fail-closed).
    #[default]
    Keep,
    Remove,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallConfig {
    #[serde(default)]
    pub enabled: bool,
    /// LAN interfaces: traffic entering on these and forwarded is filtered.
    #[serde(default)]
    pub lan: Vec<String>,
    /// WAN interfaces: when set, only LAN traffic leaving on these is filtered (LAN to
    /// LAN or to a DMZ is not); when empty, all forwarded LAN traffic is.
    #[serde(default)]
    pub wan: Vec<String>,
    /// Also filter traffic of the gateway itself (output hook).
    #[serde(default = "default_true")]
    pub output: bool,
    #[serde(default)]
    pub verdict: FirewallVerdict,
    #[serde(default)]
    pub on_exit: OnExit,
    /// Address lists accepted before any block set (e.g. Microsoft 365 Required ranges).
    #[serde(default)]
    pub allow_cidrs: Vec<Spanned<PathBuf>>,
    /// Accept allow ranges broader than /12 (IPv4) or /24 (IPv6), or that cover a block
    /// range, with a warning, instead of refusing them (src/policy/build.rs).
    #[serde(default)]
    pub allow_broad: bool,
    /// Clients tracked per profile for the per-client reject counters; beyond that, rejects
    /// are still enforced and counted in the rule's own counter.
    #[serde(default = "default_accounting_clients")]
    pub accounting_clients: u32,
    /// A client address not seen by an accounting set for this long leaves it, freeing
    /// its place (0: never; addresses then fill the set by arrival for good).
    #[serde(default = "default_accounting_idle")]
    pub accounting_idle_secs: u32,
    #[serde(default)]
    pub bypass: BypassConfig,
    #[serde(default)]
    pub shadow: ShadowConfig,
}

/// How learned addresses of blocked names are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// An address stays blocked for its DNS TTL, but at least this long.
    #[serde(default = "default_shadow_floor")]
    pub min_ttl_secs: u32,
    /// And at most this long without a refresh.
    #[serde(default = "default_shadow_max")]
    pub max_ttl_secs: u32,
    /// Learned addresses kept at most (all profiles); beyond, new ones are not added.
    #[serde(default = "default_shadow_entries")]
    pub max_addresses: usize,
    /// Address lists shadow resolution never learns (shared CDN, front-door and storage
    /// ranges). "Never learn", not "allow": static telemetry CIDRs still apply.
    #[serde(default)]
    pub never_learn_cidrs: Vec<Spanned<PathBuf>>,
    /// Lists of zones (`*.zone` or `zone` lines) served from shared hosting: a blocked
    /// name at or below one, or an answer whose CNAME chain passes through one, is never
    /// learned (DNS still blocks the name).
    #[serde(default)]
    pub never_learn_zones: Vec<Spanned<PathBuf>>,
    /// How long an address that an allowed answer revealed is remembered as shared (it is
    /// then never learned, and removed if it was), refreshed at each sighting.
    #[serde(default = "default_shared_memory")]
    pub shared_memory_secs: u32,
    /// Addresses remembered as shared at most; beyond, the oldest are forgotten (counted).
    #[serde(default = "default_shared_entries")]
    pub max_shared_addresses: usize,
    /// Names resolved again and again at most (the lists' exact names and those clients
    /// asked for under suffix rules); beyond, a new name is not tracked (counted).
    #[serde(default = "default_shadow_names")]
    pub max_names: usize,
    /// A name a client asked for is resolved again only while clients keep asking: this
    /// long after the last time, it is forgotten (its addresses expire on their own).
    #[serde(default = "default_forget_asked")]
    pub forget_asked_after_secs: u64,
}

fn default_shadow_names() -> usize {
    100_000
}
fn default_forget_asked() -> u64 {
    86_400
}

impl Default for ShadowConfig {
    fn default() -> Self {
        Self {
            min_ttl_secs: default_shadow_floor(),
            max_ttl_secs: default_shadow_max(),
            max_addresses: default_shadow_entries(),
            never_learn_cidrs: Vec::new(),
            never_learn_zones: Vec::new(),
            shared_memory_secs: default_shared_memory(),
            max_shared_addresses: default_shared_entries(),
            max_names: default_shadow_names(),
            forget_asked_after_secs: default_forget_asked(),
        }
    }
}

fn default_shared_memory() -> u32 {
    6 * 3600
}
fn default_shared_entries() -> usize {
    65_536
}

fn default_shadow_floor() -> u32 {
    300
}
fn default_shadow_max() -> u32 {
    86400
}
fn default_shadow_entries() -> usize {
    65536
}

/// Stops LAN clients from resolving around telesink (forward path only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BypassConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Act on DNS (53/udp, 53/tcp) that a LAN client sends to any server but the gateway.
    #[serde(default = "default_true")]
    pub dns: bool,
    /// "reject" it, or "redirect" it to telesink on the gateway (the client gets telesink's
    /// answer as if from the server it asked; telesink must listen on the LAN address).
    #[serde(default)]
    pub dns_action: DnsAction,
    /// Reject DNS over TLS / QUIC (853).
    #[serde(default = "default_true")]
    pub dot: bool,
    /// Address lists of public DoH resolvers: HTTPS and QUIC (443) to them is rejected.
    #[serde(default)]
    pub doh_cidrs: Vec<Spanned<PathBuf>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsAction {
    #[default]
    Reject,
    Redirect,
}

impl Default for BypassConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dns: true,
            dns_action: DnsAction::default(),
            dot: true,
            doh_cidrs: Vec::new(),
        }
    }
}

impl Default for FirewallConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            lan: Vec::new(),
            wan: Vec::new(),
            output: true,
            verdict: FirewallVerdict::default(),
            on_exit: OnExit::default(),
            allow_cidrs: Vec::new(),
            allow_broad: false,
            accounting_clients: default_accounting_clients(),
            accounting_idle_secs: default_accounting_idle(),
            bypass: BypassConfig::default(),
            shadow: ShadowConfig::default(),
        }
    }
}

fn default_accounting_clients() -> u32 {
    1000
}

fn default_accounting_idle() -> u32 {
    86_400
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Each address is served on UDP and TCP.
    #[serde(default = "default_listen", deserialize_with = "values::socket_addrs")]
    pub listen: Vec<SocketAddr>,
    /// Queries waiting on an upstream at once; beyond that, new ones get SERVFAIL at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Idle TCP connections are closed after this many seconds.
    #[serde(default = "default_tcp_idle")]
    pub tcp_idle_timeout_secs: u64,
    /// Largest UDP answer we send, whatever a client advertises (DNS flag day 2020).
    #[serde(default = "default_udp_payload")]
    pub udp_payload_max: u16,
    /// Replay answers to repeated requests (blocked names, cache hits) without running
    /// the pipeline again (docs/ARCHITECTURE.md, "The UDP fast path").
    #[serde(default = "default_true")]
    pub udp_fast_path: bool,
    /// UDP receive threads per listen address (each with its own SO_REUSEPORT socket);
    /// 0: one per CPU.
    #[serde(default)]
    pub udp_threads: usize,
    /// DNS-over-TCP connections at once. Absent: what the descriptor budget leaves, at
    /// most 4,096 (logged at start). When full, the longest idle connection is closed.
    #[serde(default)]
    pub tcp_max_connections: Option<usize>,
    /// DNS-over-TCP connections one client address may hold; its longest idle one is
    /// closed for a new one.
    #[serde(default = "default_tcp_per_client")]
    pub tcp_max_per_client: usize,
    #[serde(default)]
    pub rate_limit: limits::RateLimitConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Empty: the name servers of `resolv_conf`, minus telesink's own addresses.
    /// `ip:port` (clear text), `tls://HOST[:853][#NAME]`, `https://HOST[:443][/PATH][#NAME]`
    /// (src/dns/upstream/spec.rs).
    #[serde(default, deserialize_with = "upstream::servers")]
    pub servers: Vec<upstream::ServerSpec>,
    #[serde(default = "default_resolv_conf")]
    pub resolv_conf: PathBuf,
    /// Total time a query may wait on upstreams before the client gets SERVFAIL.
    #[serde(default = "default_upstream_timeout")]
    pub timeout_ms: u64,
    /// What happens when an encrypted upstream fails. Default: `strict` when any
    /// encrypted server is configured (SERVFAIL, never clear text).
    #[serde(default)]
    pub encryption: Option<Encryption>,
    /// An organisation's own CA (PEM), trusted beside the system's CA store.
    pub ca_file: Option<PathBuf>,
    /// The encrypted upstreams validate DNSSEC: their AD bit is passed to clients that
    /// ask for it (DO or AD set). Otherwise telesink clears AD (RFC 4035 section 4.9.3).
    #[serde(default)]
    pub trust_ad: bool,
    /// Addresses of encrypted upstreams written by name, so that reaching them needs no
    /// clear-text lookup: `"dns.example" = ["192.0.2.1", "2001:db8::1"]`.
    #[serde(default)]
    pub bootstrap: std::collections::BTreeMap<String, Vec<IpAddr>>,
    /// SPKI pins per certificate name (RFC 7858 section 4.2): base64 of the SHA-256 of
    /// the server's SubjectPublicKeyInfo; a pinned server is trusted by its key alone.
    #[serde(default)]
    pub pins: std::collections::BTreeMap<String, Vec<String>>,
    /// Long-lived connections per encrypted upstream.
    #[serde(default = "default_upstream_connections")]
    pub connections: usize,
    /// An encrypted connection without queries for this long is closed (or sooner when
    /// the server's edns-tcp-keepalive says so).
    #[serde(default = "default_upstream_idle")]
    pub idle_timeout_secs: u64,
    /// `post` or `get` for DNS over HTTPS.
    #[serde(default)]
    pub doh_method: upstream::DohMethod,
}

/// When an encrypted upstream fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encryption {
    /// SERVFAIL with EDE 22/23; never clear text.
    Strict,
    /// A failed encrypted server is asked in clear text at its address, port 53
    /// (counted); a certificate that does not check out is never retried.
    Opportunistic,
}

/// `[[forward]]`: a zone (and everything below it) to its own servers, such as Active
/// Directory zones to the domain controllers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    pub zone: Spanned<String>,
    #[serde(deserialize_with = "upstream::servers")]
    pub servers: Vec<upstream::ServerSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Answers kept; 0 turns the cache off.
    #[serde(default = "default_cache_size")]
    pub size: usize,
    #[serde(default)]
    pub min_ttl_secs: u32,
    #[serde(default = "default_max_ttl")]
    pub max_ttl_secs: u32,
    #[serde(default = "default_negative_max_ttl")]
    pub negative_max_ttl_secs: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Where relative list paths point; itself relative to the config file's folder.
    #[serde(default = "default_lists_dir")]
    pub lists_dir: PathBuf,
    /// TTL of sinkhole answers, and the negative TTL of their synthesized SOA.
    #[serde(default = "default_block_ttl")]
    pub block_ttl_secs: u32,
    /// Block a forwarded answer whose CNAME chain passes through a blocked name.
    #[serde(default = "default_true")]
    pub cname_cloaking: bool,
    /// Only these networks get answers; everyone else gets REFUSED.
    #[serde(
        default = "default_allowed_clients",
        deserialize_with = "values::networks"
    )]
    pub allowed_clients: Vec<IpNet>,
    /// Allowlists that override every profile.
    #[serde(default)]
    pub allowlists: Vec<Spanned<PathBuf>>,
    /// Suffix block rules on or above these zones are refused at load.
    #[serde(default)]
    pub guard: Option<Spanned<PathBuf>>,
    /// Names Microsoft 365 marks Required: a profile that is on and blocks one is warned
    /// about (by `check`, start and reload) unless its `warning` names it.
    #[serde(default)]
    pub required: Option<Spanned<PathBuf>>,
    /// A list line that does not parse is an error for `check`, start and reload alike
    /// (false), or is skipped, counted and reported by all three (true).
    #[serde(default)]
    pub skip_invalid_lines: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeName {
    #[default]
    Null,
    Nxdomain,
    Nodata,
    Refused,
    Ip,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    #[serde(default)]
    pub description: String,
    /// On for every group unless a group disables it.
    #[serde(default)]
    pub enabled: bool,
    /// Where it is not on: observed (log-only), answered normally, its would-be blocks
    /// counted per client. Never blocks.
    #[serde(default)]
    pub observed: bool,
    #[serde(default = "default_mode")]
    pub mode: Spanned<ModeName>,
    /// Answers of mode "ip".
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    #[serde(default)]
    pub lists: Vec<Spanned<PathBuf>>,
    /// Exceptions that apply to this profile only.
    #[serde(default)]
    pub allowlists: Vec<Spanned<PathBuf>>,
    /// Logged at load when the profile is on: what it breaks.
    #[serde(default)]
    pub warning: Option<String>,
    /// Address lists (one CIDR or address per line) the firewall rejects for this profile.
    #[serde(default)]
    pub cidrs: Vec<Spanned<PathBuf>>,
    /// Shadow resolution: telesink resolves the names this profile blocks itself and has
    /// the firewall reject their addresses, for clients that connect by address.
    #[serde(default)]
    pub shadow: bool,
    /// A block or address list of this profile with no entries is an error (it would
    /// silently block nothing) unless this says such a list may be empty.
    #[serde(default)]
    pub allow_empty_lists: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub name: Spanned<String>,
    /// Addresses and networks; the most specific match over all groups decides.
    #[serde(default, deserialize_with = "values::networks")]
    pub clients: Vec<IpNet>,
    /// Named hosts of this group, name = "address": members of the group, and their name
    /// is their `client` label in the metrics.
    #[serde(default)]
    pub hosts: std::collections::BTreeMap<String, IpAddr>,
    /// Profiles switched on for this group on top of the enabled ones.
    #[serde(default)]
    pub enable: Vec<Spanned<String>>,
    /// Profiles switched off for this group.
    #[serde(default)]
    pub disable: Vec<Spanned<String>>,
}

/// Profiles keep the order of the file: it is the tie-break when two profiles block the
/// same name at the same specificity, and the order `telesink profiles` prints.
pub mod indexmap_like {
    use std::fmt;

    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
    use toml::Spanned;

    use super::ProfileConfig;

    #[derive(Debug, Clone, Default)]
    pub struct OrderedProfiles(pub Vec<(Spanned<String>, ProfileConfig)>);

    impl<'de> Deserialize<'de> for OrderedProfiles {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = OrderedProfiles;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a table of profiles")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                    let mut out = Vec::new();
                    while let Some((k, v)) = map.next_entry::<Spanned<String>, ProfileConfig>()? {
                        out.push((k, v));
                    }
                    Ok(OrderedProfiles(out))
                }
            }
            d.deserialize_map(V)
        }
    }
}

fn default_mode() -> Spanned<ModeName> {
    Spanned::new(0..0, ModeName::Null)
}
fn default_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5353)]
}
fn default_max_in_flight() -> usize {
    4096
}
fn default_tcp_idle() -> u64 {
    10
}
fn default_tcp_per_client() -> usize {
    32
}
fn default_udp_payload() -> u16 {
    1232
}
fn default_resolv_conf() -> PathBuf {
    PathBuf::from("/etc/resolv.conf")
}
fn default_upstream_connections() -> usize {
    2
}

fn default_upstream_idle() -> u64 {
    30
}

fn default_upstream_timeout() -> u64 {
    1800
}
fn default_cache_size() -> usize {
    65536
}
fn default_max_ttl() -> u32 {
    86400
}
fn default_negative_max_ttl() -> u32 {
    900
}
fn default_lists_dir() -> PathBuf {
    PathBuf::from("../blocklists")
}
fn default_block_ttl() -> u32 {
    60
}
fn default_true() -> bool {
    true
}
/// Loopback and the private ranges a LAN uses: never an open resolver by default.
fn default_allowed_clients() -> Vec<IpNet> {
    [
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fc00::/7",
        "fe80::/10",
    ]
    .iter()
    .filter_map(|s| s.parse().ok())
    .collect()
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_in_flight: default_max_in_flight(),
            tcp_idle_timeout_secs: default_tcp_idle(),
            udp_payload_max: default_udp_payload(),
            udp_fast_path: true,
            udp_threads: 0,
            tcp_max_connections: None,
            tcp_max_per_client: default_tcp_per_client(),
            rate_limit: limits::RateLimitConfig::default(),
        }
    }
}
impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            resolv_conf: default_resolv_conf(),
            timeout_ms: default_upstream_timeout(),
            encryption: None,
            ca_file: None,
            trust_ad: false,
            bootstrap: Default::default(),
            pins: Default::default(),
            connections: default_upstream_connections(),
            idle_timeout_secs: default_upstream_idle(),
            doh_method: Default::default(),
        }
    }
}
impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            size: default_cache_size(),
            min_ttl_secs: 0,
            max_ttl_secs: default_max_ttl(),
            negative_max_ttl_secs: default_negative_max_ttl(),
        }
    }
}
impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            lists_dir: default_lists_dir(),
            block_ttl_secs: default_block_ttl(),
            cname_cloaking: true,
            allowed_clients: default_allowed_clients(),
            allowlists: Vec::new(),
            guard: None,
            required: None,
            skip_invalid_lines: false,
        }
    }
}
