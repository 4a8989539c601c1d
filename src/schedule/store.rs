//! Persistence of custom schedules: one small JSON file, replaced atomically.
//!
//! The file is rewritten whole on every change (a handful of schedules, a few
//! kilobytes): the new content goes to a temporary file in the same directory,
//! is fsynced, then renamed over the old file, so a crash leaves either the old
//! or the new list, never half of one. Reading a file that exists but does not
//! parse is an error: silently starting with no schedules would lose them at
//! the next write.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ScheduleSpec;

/// Version written in the file, checked when reading.
const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    version: u32,
    schedules: Vec<ScheduleSpec>,
}

/// Reads the schedules of `path`; a missing file is an empty list.
pub(crate) fn load(path: &Path) -> Result<Vec<ScheduleSpec>, String> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let file: StoreFile = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{} is not a valid schedule file ({e}); fix or move it away",
            path.display()
        )
    })?;
    if file.version != FORMAT_VERSION {
        return Err(format!(
            "{} has format version {}, this build reads version {FORMAT_VERSION}",
            path.display(),
            file.version
        ));
    }
    Ok(file.schedules)
}

/// Replaces the content of `path` with `schedules` (temp file, fsync, rename).
pub(crate) fn save(path: &Path, schedules: &[ScheduleSpec]) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let file = StoreFile {
        version: FORMAT_VERSION,
        schedules: schedules.to_vec(),
    };
    let mut body = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
    body.push(b'\n');

    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "schedules.json".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // Make the rename itself durable. Opening a directory is not possible
        // on every platform; the data is already safe in that case.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::ScheduleAction;

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&dir.path().join("none.json")).unwrap().is_empty());
    }

    #[test]
    fn round_trip_creates_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/schedules.json");
        let specs = vec![ScheduleSpec {
            name: "x".into(),
            cron: "0 * * * *".into(),
            timezone: None,
            action: ScheduleAction::Predictive { limit: 5 },
            priority: Some(1),
            strategy: None,
        }];
        save(&path, &specs).unwrap();
        assert_eq!(load(&path).unwrap(), specs);
        // No temporary file left behind.
        let entries: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(entries.len(), 1);
    }

    #[test]
    fn corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        fs::write(&path, b"{not json").unwrap();
        let err = load(&path).unwrap_err();
        assert!(err.contains("not a valid schedule file"), "{err}");
    }
}
