//! Unknown keys are errors at every depth: insert a stray key into every table (and every
//! table inside an array) of the shipped config and check that each variant is rejected.

use std::path::Path;

use telesink::config::LoadedConfig;
use toml::Value;

/// Paths to every table in the document: a list of steps (key, or array index).
fn tables(v: &Value, path: Vec<Step>, out: &mut Vec<Vec<Step>>) {
    match v {
        Value::Table(t) => {
            out.push(path.clone());
            for (k, v) in t {
                let mut p = path.clone();
                p.push(Step::Key(k.clone()));
                tables(v, p, out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                let mut p = path.clone();
                p.push(Step::Index(i));
                tables(v, p, out);
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

fn table_at<'a>(v: &'a mut Value, path: &[Step]) -> &'a mut toml::Table {
    let mut cur = v;
    for step in path {
        cur = match step {
            Step::Key(k) => cur.get_mut(k).expect("key"),
            Step::Index(i) => cur.get_mut(*i).expect("index"),
        };
    }
    cur.as_table_mut().expect("table")
}

fn check_every_depth(file: &Path, with_groups: bool) -> usize {
    let mut text = std::fs::read_to_string(file).expect("read config");
    if with_groups {
        // The shipped config only shows groups in comments; add one so that table is covered too.
        text.push_str("\n[[groups]]\nname = \"g\"\nclients = [\"192.0.2.0/24\"]\n");
    }
    let doc: Value = toml::from_str(&text).expect("shipped config parses");
    LoadedConfig::parse(file, text.clone()).expect("shipped config is valid");
    let mut paths = Vec::new();
    tables(&doc, Vec::new(), &mut paths);
    for path in &paths {
        let mut bad = doc.clone();
        table_at(&mut bad, path).insert("test_only_invalid_config_key".into(), Value::Integer(1));
        let text = toml::to_string(&bad).expect("serialize");
        let err = LoadedConfig::parse(file, text)
            .expect_err(&format!("a stray key at {path:?} must be rejected"));
        // [profiles] maps names to profiles: there a stray key is read as a profile and
        // rejected for not being one. Everywhere else the message names the key.
        let is_profile_map = matches!(path.as_slice(), [Step::Key(k)] if k == "profiles");
        let msg = err.to_string();
        assert!(
            msg.contains("test_only_invalid_config_key")
                || (is_profile_map && msg.contains("ProfileConfig")),
            "{msg}"
        );
    }
    paths.len()
}

#[test]
fn shipped_config_rejects_unknown_keys_at_every_table() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let n = check_every_depth(&root.join("config/telesink.toml"), true);
    // root, server, upstream, cache, policy, profiles, 11 profiles, firewall, bypass, groups[0]
    assert!(n >= 19, "only {n} tables visited");
    let n = check_every_depth(&root.join("config/gateway.toml"), false);
    assert!(n >= 12, "only {n} tables visited");
}
