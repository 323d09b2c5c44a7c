//! The state file: runtime toggles kept across restarts.
//!
//! Written atomically (temporary file in the same folder, fsync, rename, fsync of the
//! folder, as src/durable.rs does, in two steps here: `prepare` writes and syncs,
//! `Pending::commit` renames and syncs the folder), so after a crash or power cut the file holds the old toggles or the new ones,
//! never a torn mix. A file that cannot be read back is moved aside and reported; the
//! daemon then starts from the config alone rather than not at all.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{error, info};

use crate::policy::{Layers, Toggles};

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    version: u32,
    /// The toggles in force (in a cluster: what the layers make of them).
    toggles: Toggles,
    /// In a cluster: the shared toggles at the store revision last applied, and this
    /// node's overrides. A node restarted without the store enforces these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster: Option<Layers>,
}

#[derive(Debug, thiserror::Error)]
#[error("state file {path}: {source}")]
pub struct StateError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

#[derive(Debug, Clone)]
pub struct StateFile {
    pub path: PathBuf,
}

/// A written but not yet committed state: dropping it leaves the old file in place.
pub struct Pending {
    tmp: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl StateFile {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// The saved toggles; none if there is no file. A corrupt file is renamed to
    /// `<name>.corrupt-<unix time>` and reported, and the config alone applies.
    pub fn load(&self) -> Toggles {
        self.load_all().0
    }

    /// The saved toggles and, for a cluster node, their layers.
    pub fn load_all(&self) -> (Toggles, Option<Layers>) {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Default::default(),
            Err(e) => {
                error!(
                    "state file {}: {e}; starting from the config alone",
                    self.path.display()
                );
                return Default::default();
            }
        };
        // A file that is not even UTF-8 is as corrupt as any other: set aside, reported.
        let Ok(text) = String::from_utf8(bytes) else {
            self.set_aside("not UTF-8");
            return Default::default();
        };
        match serde_json::from_str::<Document>(&text) {
            Ok(doc) if doc.version == VERSION => {
                info!(path = %self.path.display(), toggles = doc.toggles.profiles.len(), "runtime toggles restored");
                (doc.toggles, doc.cluster)
            }
            Ok(doc) => {
                self.set_aside(&format!("unknown version {}", doc.version));
                Default::default()
            }
            Err(e) => {
                self.set_aside(&e.to_string());
                Default::default()
            }
        }
    }

    /// Removes temporary copies (`<name>.tmp-<pid>`) that a killed daemon left behind.
    /// Only at the start of the one daemon that holds the state lock, so none of them
    /// can belong to a change in progress.
    pub fn clean_stale_temporaries(&self) {
        let (Some(dir), Some(stem)) = (self.path.parent(), self.path.file_stem()) else {
            return;
        };
        let prefix = format!("{}.tmp-", stem.to_string_lossy());
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(&prefix) {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => info!(
                        "removed {}, a temporary state file left by an earlier run",
                        entry.path().display()
                    ),
                    Err(e) => error!("cannot remove {}: {e}", entry.path().display()),
                }
            }
        }
    }

    fn set_aside(&self, why: &str) {
        let aside = self
            .path
            .with_extension(format!("corrupt-{}", crate::clock::unix_now()));
        match std::fs::rename(&self.path, &aside) {
            Ok(()) => error!(
                "state file {} is unreadable ({why}); moved to {} and starting from the config alone",
                self.path.display(),
                aside.display()
            ),
            Err(e) => error!(
                "state file {} is unreadable ({why}) and could not be moved aside: {e}",
                self.path.display()
            ),
        }
    }

    /// Writes the toggles to a temporary file and syncs it; `Pending::commit` makes it
    /// the state file. Split in two so a change can be refused (firewall error) after the
    /// disk write succeeded, without leaving the new state behind.
    pub fn prepare(&self, toggles: &Toggles) -> Result<Pending, StateError> {
        self.prepare_with(toggles, None)
    }

    /// `prepare` for a cluster node: the layers too.
    pub fn prepare_with(
        &self,
        toggles: &Toggles,
        layers: Option<&Layers>,
    ) -> Result<Pending, StateError> {
        let err = |source| StateError {
            path: self.path.clone(),
            source,
        };
        let doc = Document {
            version: VERSION,
            toggles: toggles.clone(),
            cluster: layers.cloned(),
        };
        let text = serde_json::to_string_pretty(&doc).map_err(|e| err(e.into()))?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = self
            .path
            .with_extension(format!("tmp-{}", std::process::id()));
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        let pending = Pending {
            tmp: tmp.clone(),
            path: self.path.clone(),
            committed: false,
        };
        f.write_all(text.as_bytes()).map_err(err)?;
        f.write_all(b"\n").map_err(err)?;
        f.sync_all().map_err(err)?;
        Ok(pending)
    }
}

impl Pending {
    /// Makes the written state the state file. Err: nothing changed on disk. Ok(Some):
    /// the new file is in place (it is what a restart reads), but the folder's entry could
    /// not be synced, so a power cut may still bring the old one back: the caller keeps
    /// the change and says so, never rolls back to a state the file no longer has.
    pub fn commit(mut self) -> Result<Option<StateError>, StateError> {
        let err = |source| StateError {
            path: self.path.clone(),
            source,
        };
        std::fs::rename(&self.tmp, &self.path).map_err(err)?;
        self.committed = true;
        // The rename is durable only once the folder's entry is on disk.
        let synced = match crate::failpoint::hit("state-folder-sync") {
            true => Err(crate::failpoint::error("state-folder-sync")),
            false => crate::durable::sync_folder(&self.path),
        };
        Ok(synced.err().map(err))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Where the state file lives: the config's, else systemd's StateDirectory, else
/// /var/lib/telesink.
pub fn default_dir(env: &str, fallback: &str) -> PathBuf {
    std::env::var_os(env)
        .and_then(|v| {
            // systemd passes several folders separated by ':'; ours is the first.
            let s = v.to_string_lossy().into_owned();
            s.split(':')
                .next()
                .filter(|x| !x.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(fallback))
}

pub fn state_path(configured: Option<&Path>) -> PathBuf {
    configured.map_or_else(
        || default_dir("STATE_DIRECTORY", "/var/lib/telesink").join("state.json"),
        Path::to_owned,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Toggle;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("telesink-state-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn round_trip_and_uncommitted_changes_leave_no_trace() {
        let dir = scratch("rt");
        let file = StateFile::new(dir.join("state.json"));
        assert_eq!(file.load(), Toggles::default());
        let mut t = Toggles::default();
        t.set(Toggle {
            profile: "office-telemetry".into(),
            group: Some("finance".into()),
            enabled: false,
            until: Some(4_000_000_000),
            by: None,
            why: None,
        });
        assert!(file.prepare(&t).unwrap().commit().unwrap().is_none());
        assert_eq!(file.load(), t);
        let mut other = t.clone();
        other.set_log_only(Toggle {
            profile: "office-telemetry".into(),
            group: None,
            enabled: true,
            until: None,
            by: None,
            why: None,
        });
        drop(file.prepare(&other).unwrap());
        assert_eq!(file.load(), t);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_corrupt_file_is_set_aside_not_fatal() {
        let dir = scratch("corrupt");
        let file = StateFile::new(dir.join("state.json"));
        std::fs::write(&file.path, "{\"version\": 1, \"toggles\": [").unwrap();
        assert_eq!(file.load(), Toggles::default());
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1);
        assert!(names[0].starts_with("state.corrupt-"), "{names:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
