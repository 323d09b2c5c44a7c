//! Which settings a reload takes and which only a restart does. A reload applies the
//! policy, the lists, the groups, the firewall (on/off, interfaces, verdict, on_exit, the
//! sets) and the rate limit's rules at once; the listeners, the upstreams, the cache, the
//! metrics endpoint, the ledger, the control socket, the cluster connection and the numbers of running shadow
//! resolution are built once at start. A reload that changes one of those says so (in
//! its answer, which `telesink reload` prints, and in the log) instead of keeping the old
//! value without a word.

use super::Config;

/// The restart-only settings that differ between two configs, by their key.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    // Compared by their Debug text: every field here is plain data (no spans), and
    // defaults are filled in, so an added key with its default value is no change.
    let fields: [(&'static str, String, String); 17] = [
        field("server.listen", &old.server.listen, &new.server.listen),
        field(
            "server.max_in_flight",
            &old.server.max_in_flight,
            &new.server.max_in_flight,
        ),
        field(
            "server.tcp_idle_timeout_secs",
            &old.server.tcp_idle_timeout_secs,
            &new.server.tcp_idle_timeout_secs,
        ),
        field(
            "server.udp_payload_max",
            &old.server.udp_payload_max,
            &new.server.udp_payload_max,
        ),
        field(
            "server.udp_fast_path",
            &old.server.udp_fast_path,
            &new.server.udp_fast_path,
        ),
        field(
            "server.udp_threads",
            &old.server.udp_threads,
            &new.server.udp_threads,
        ),
        field(
            "server.tcp_max_connections",
            &old.server.tcp_max_connections,
            &new.server.tcp_max_connections,
        ),
        field(
            "server.tcp_max_per_client",
            &old.server.tcp_max_per_client,
            &new.server.tcp_max_per_client,
        ),
        field(
            "server.rate_limit.max_clients",
            &old.server.rate_limit.max_clients,
            &new.server.rate_limit.max_clients,
        ),
        field("upstream", &old.upstream, &new.upstream),
        field("cache", &old.cache, &new.cache),
        field("metrics", &old.metrics, &new.metrics),
        field("evidence", &old.evidence, &new.evidence),
        // The store connection is made at start (src/cluster/).
        field("cluster", &old.cluster, &new.cluster),
        field(
            "control.socket / socket_group / state_file",
            &(
                &old.control.socket,
                &old.control.socket_group,
                &old.control.state_file,
            ),
            &(
                &new.control.socket,
                &new.control.socket_group,
                &new.control.state_file,
            ),
        ),
        field(
            "firewall.shadow (min_ttl_secs, max_ttl_secs, max_addresses)",
            &(
                old.firewall.shadow.min_ttl_secs,
                old.firewall.shadow.max_ttl_secs,
                old.firewall.shadow.max_addresses,
            ),
            &(
                new.firewall.shadow.min_ttl_secs,
                new.firewall.shadow.max_ttl_secs,
                new.firewall.shadow.max_addresses,
            ),
        ),
        field(
            "firewall.shadow (shared_memory_secs, max_shared_addresses)",
            &(
                old.firewall.shadow.shared_memory_secs,
                old.firewall.shadow.max_shared_addresses,
            ),
            &(
                new.firewall.shadow.shared_memory_secs,
                new.firewall.shadow.max_shared_addresses,
            ),
        ),
    ];
    fields
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(name, _, _)| name)
        .collect()
}

fn field<T: std::fmt::Debug>(name: &'static str, a: &T, b: &T) -> (&'static str, String, String) {
    (name, format!("{a:?}"), format!("{b:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_restart_only_keys_are_named() {
        let parse = |text: &str| toml::from_str::<Config>(text).unwrap();
        let old = parse("[upstream]\nservers = [\"192.0.2.1:53\"]\n[cache]\nsize = 100\n");
        let same = parse("[cache]\nsize = 100\n[upstream]\nservers = [\"192.0.2.1:53\"]\n");
        assert!(restart_only_changes(&old, &same).is_empty());
        let new = parse(
            "[upstream]\nservers = [\"192.0.2.2:53\"]\n[cache]\nsize = 100\n[policy]\nblock_ttl_secs = 5\n",
        );
        assert_eq!(restart_only_changes(&old, &new), ["upstream"]);
    }
}
