//! Metric names, one place: the code, the tests and docs/METRICS.md use these.

pub const DNS_QUERIES: &str = "telesink_dns_queries_total";
pub const DNS_BLOCKED: &str = "telesink_dns_blocked_total";
pub const FIREWALL_REJECTS: &str = "telesink_firewall_rejects_total";
pub const BYPASS_ATTEMPTS: &str = "telesink_bypass_attempts_total";
pub const CLIENT_OVERFLOW: &str = "telesink_client_label_overflow_total";
pub const SHADOW_ADDED: &str = "telesink_shadow_addresses_added_total";
pub const SHADOW_ALLOW_SKIPPED: &str = "telesink_shadow_allow_skipped_total";
pub const SHADOW_QUEUE_FULL: &str = "telesink_shadow_queue_full_total";
pub const SHADOW_OVER_MAX: &str = "telesink_shadow_over_max_addresses_total";
pub const SHADOW_SHARED_SKIPPED: &str = "telesink_shadow_shared_skipped_total";
pub const SHADOW_SHARED_REMOVED: &str = "telesink_shadow_shared_removed_total";
pub const SHADOW_NEVER_LEARN_SKIPPED: &str = "telesink_shadow_never_learn_skipped_total";
pub const SHADOW_SHARED_NOT_REMEMBERED: &str = "telesink_shadow_shared_not_remembered_total";
pub const FIREWALL_RESTORES: &str = "telesink_firewall_restores_total";
pub const FIREWALL_EVENT_OVERFLOWS: &str = "telesink_firewall_event_overflows_total";
pub const RELOADS: &str = "telesink_reloads_total";
pub const POLICY_GENERATION: &str = "telesink_policy_generation";
pub const LAST_RELOAD: &str = "telesink_policy_last_reload_timestamp_seconds";
pub const LIST_ENTRIES: &str = "telesink_list_entries";
pub const CACHE_ENTRIES: &str = "telesink_cache_entries";
pub const IN_FLIGHT: &str = "telesink_dns_in_flight";
pub const CLIENTS_SEEN: &str = "telesink_clients_seen";
pub const BUILD_INFO: &str = "telesink_build_info";
pub const UPSTREAM_LATENCY: &str = "telesink_upstream_latency_seconds";
pub const CACHE_LOOKUPS: &str = "telesink_cache_lookups_total";
pub const DNS_LOGGED: &str = "telesink_dns_logged_total";
