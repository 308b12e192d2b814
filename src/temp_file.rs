//! Files the tests and benchmarks create in the system's temp directory, SQLite databases
//! mostly, removed with their companions when dropped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A file in the system's temp directory, named for this process and unique within it, removed
/// (with SQLite's journal, or its WAL and shared-memory index) when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    /// A new, absent file whose name ends in `.{extension}`.
    pub fn new(extension: &str) -> TempFile {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "cachesweeper-test-{}-{}.{extension}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_file(&path);
        TempFile(path)
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The path as a command-line argument.
    pub fn arg(&self) -> &str {
        self.0.to_str().expect("temp dir path is UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        for suffix in ["-journal", "-wal", "-shm"] {
            let mut companion = self.0.clone().into_os_string();
            companion.push(suffix);
            let _ = std::fs::remove_file(companion);
        }
    }
}
