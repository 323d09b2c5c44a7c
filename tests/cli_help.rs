//! Every command's help describes every argument: an admin reading `--help` must never
//! meet a bare `<NAME>` or `--flag`.

mod common;

use common::bin;

const COMMANDS: &[&str] = &[
    "run",
    "check",
    "explain",
    "firewall show",
    "firewall apply",
    "firewall remove",
    "firewall counters",
    "status",
    "profiles",
    "profile",
    "log-only",
    "reload",
    "init",
];

#[test]
fn every_argument_of_every_command_has_a_description() {
    for command in COMMANDS {
        let out = std::process::Command::new(bin())
            .args(command.split_whitespace())
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{command} --help failed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.lines().next().is_some_and(|l| !l.trim().is_empty()),
            "{command}: no description:\n{text}"
        );
        for line in text.lines() {
            let t = line.trim_start();
            let is_arg = line.starts_with("  ") && (t.starts_with('-') || t.starts_with('<'));
            if !is_arg {
                continue;
            }
            // "  --flag <VALUE>  Description" or "  <NAME>  Description": text after the
            // argument itself, separated by at least two spaces.
            let described = t
                .split_once("  ")
                .is_some_and(|(_, rest)| !rest.trim().is_empty() && !rest.trim().starts_with('['));
            assert!(
                described,
                "{command}: undescribed argument: {line:?}\n{text}"
            );
        }
    }
}
