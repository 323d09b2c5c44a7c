//! The top-level modules form layers with no import cycle (docs/ARCHITECTURE.md, "Module
//! map"): `control` and `daemon`, `dns` and `firewall`, `dns` and `metrics` once imported
//! each other. Every `crate::NAME` a module's source mentions (comments aside) is an edge;
//! the test fails naming a cycle, and fails if `unsafe` appears outside the netlink module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `src/dns/udp.rs` -> `dns`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .filter(|l| !l.trim().is_empty())
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let from = module_of(&src, &file);
        let text = std::fs::read_to_string(&file).unwrap();
        for line in code_lines(&text) {
            for part in line.split("crate::").skip(1) {
                let to: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !to.is_empty() && to != from {
                    edges.entry(from.clone()).or_default().insert(to);
                }
            }
        }
    }
    edges
}

fn path_between(
    edges: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    to: &str,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    for next in edges.get(from).into_iter().flatten() {
        if next == to {
            return Some(vec![from.to_owned(), to.to_owned()]);
        }
        if seen.insert(next.clone())
            && let Some(mut rest) = path_between(edges, next, to, seen)
        {
            rest.insert(0, from.to_owned());
            return Some(rest);
        }
    }
    None
}

#[test]
fn the_module_graph_has_no_cycles() {
    let edges = graph();
    assert!(edges.len() > 5, "the graph was not read: {edges:?}");
    for (from, tos) in &edges {
        for to in tos {
            if let Some(cycle) = path_between(&edges, to, from, &mut BTreeSet::new()) {
                panic!("import cycle: {from} -> {}", cycle.join(" -> "));
            }
        }
    }
    // The layering the architecture promises, spelled out for the pairs that once broke.
    for (a, b) in [
        ("dns", "firewall"),
        ("dns", "metrics"),
        ("dns", "shadow"),
        ("firewall", "dns"),
        ("apply", "control"),
        ("apply", "daemon"),
        ("control", "daemon"),
        // The services are owned by the apply path; the scrape only observes them, and
        // the control plane and the evidence feed read them, not the metrics' state.
        ("services", "apply"),
        ("services", "metrics"),
        ("services", "control"),
        ("metrics", "apply"),
        ("metrics", "control"),
        ("control", "metrics"),
        ("audit", "metrics"),
        ("audit", "apply"),
        ("devices", "metrics"),
        ("devices", "apply"),
        ("dns", "devices"),
    ] {
        assert!(
            !edges.get(a).is_some_and(|t| t.contains(b)),
            "{a} must not import {b}"
        );
    }
}

#[test]
fn unsafe_code_is_only_in_the_netlink_module_and_forbidden_elsewhere() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    for file in files {
        if file.ends_with("firewall/netlink.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            assert!(
                !code.contains("unsafe ") && !code.contains("unsafe{"),
                "{}:{}: unsafe code outside src/firewall/netlink.rs",
                file.display(),
                n + 1
            );
        }
    }
}
