//! Source offsets of standalone mode: a JSON file (`offset.storage.file.filename`), keyed by
//! connector and source partition, replaced atomically on every flush.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sluice_proto::connector::v1::SourcePosition;

#[derive(Default, Serialize, Deserialize)]
struct OffsetFile {
    version: u32,
    /// connector name → source partition (JSON text) → source offset (JSON text)
    offsets: BTreeMap<String, BTreeMap<String, String>>,
}

/// Committed source positions. `commit` records positions whose records Kafka acknowledged;
/// `flush` makes them durable.
pub struct OffsetStore {
    path: Option<PathBuf>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    file: OffsetFile,
    dirty: bool,
}

impl OffsetStore {
    /// Opens the store at `path` (created on first flush), or an in-memory store.
    pub fn open(path: Option<&Path>) -> anyhow::Result<OffsetStore> {
        let mut file = OffsetFile {
            version: 1,
            ..OffsetFile::default()
        };
        if let Some(path) = path {
            match std::fs::read(path) {
                Ok(bytes) => {
                    file = serde_json::from_slice(&bytes).with_context(|| {
                        format!(
                            "read offsets file {}: not a Sluice offsets file",
                            path.display()
                        )
                    })?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("read offsets file {}", path.display()))
                }
            }
        }
        Ok(OffsetStore {
            path: path.map(Path::to_path_buf),
            state: Mutex::new(State { file, dirty: false }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-written: every update is a
        // single insert, so the data is usable even if poisoned.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn positions(&self, connector: &str) -> Vec<SourcePosition> {
        self.lock()
            .file
            .offsets
            .get(connector)
            .map(|m| {
                m.iter()
                    .map(|(partition, offset)| SourcePosition {
                        partition: partition.clone(),
                        offset: offset.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn commit<'a>(
        &self,
        connector: &str,
        positions: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        let mut state = self.lock();
        let entry = state.file.offsets.entry(connector.to_string()).or_default();
        let mut changed = false;
        for (partition, offset) in positions {
            entry.insert(partition.to_string(), offset.to_string());
            changed = true;
        }
        state.dirty |= changed;
    }

    /// Writes the file if anything changed: temporary file, fsync, rename, fsync directory.
    pub async fn flush(&self) -> anyhow::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let bytes = {
            let mut state = self.lock();
            if !state.dirty {
                return Ok(());
            }
            state.dirty = false;
            serde_json::to_vec_pretty(&state.file)?
        };
        let result = tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .context("offsets writer")?;
        if result.is_err() {
            self.lock().dirty = true;
        }
        result
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("write offsets into {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("replace offsets file {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn offsets_survive_reopen_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.json");
        let store = OffsetStore::open(Some(&path)).unwrap();
        store.commit("c", [("{\"f\":1}", "{\"position\":5}")]);
        store.flush().await.unwrap();
        let again = OffsetStore::open(Some(&path)).unwrap();
        assert_eq!(again.positions("c")[0].offset, "{\"position\":5}");
        assert!(again.positions("other").is_empty());

        std::fs::write(&path, "garbage").unwrap();
        let e = OffsetStore::open(Some(&path)).err().unwrap();
        assert!(format!("{e:#}").contains("o.json"));
    }
}
