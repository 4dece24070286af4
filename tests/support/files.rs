//! Where the committed fixtures are, and copying a folder of them: shared by the api and engine
//! test binaries (each includes this file through its helpers module).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The repository root (the package's manifest folder).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/fixtures`: the reference models, adapters and numbers.
pub fn fixtures() -> PathBuf {
    repo().join("tests/fixtures")
}

/// Copies a folder tree (files and sub-folders) to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
