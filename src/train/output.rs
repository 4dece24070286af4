//! Where a training may write its adapter: a new folder under MUSCLE_MODEL_DIR that
//! `GET /v1/models` will list. Checked at submission (so that a run is not refused after it has
//! trained) and again before the adapter is installed.

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use crate::engine::folder::ADAPTER_CONFIG;
use crate::models::Resolver;
use crate::models::catalog::MAX_DEPTH;

/// The folder adapters are written under by convention (the writable volume of the Docker
/// deployment): an adapter there, not the folder itself.
pub const TRAINED_ROOT: &str = "trained";
/// The longest file name most file systems take (NAME_MAX), in bytes.
const MAX_COMPONENT_BYTES: usize = 255;

/// `name` with `.` and empty components dropped (`./a//b/` is `a/b`), the form stored and
/// reported; a name with `..` or a root is returned as it is, for the check to refuse.
pub fn normalized(name: &str) -> String {
    let mut parts = Vec::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy()),
            Component::CurDir => {}
            _ => return name.to_string(),
        }
    }
    parts.join("/")
}

/// The folder of a new adapter named `name`: every check but that it does not exist yet.
pub fn output_folder(resolver: &Resolver, name: &str) -> Result<PathBuf, String> {
    let name = normalized(name);
    // Absolute paths, `..` and symbolic links out of the root first.
    let folder = resolver.confined(&name)?;
    let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return Err("must name a folder under MUSCLE_MODEL_DIR".into());
    }
    for part in &parts {
        if part.len() > MAX_COMPONENT_BYTES {
            return Err(format!(
                "the folder name {:?}... is {} bytes long; at most {MAX_COMPONENT_BYTES}",
                part.chars().take(16).collect::<String>(),
                part.len()
            ));
        }
        if part.starts_with('.') {
            return Err(format!(
                "{part:?} begins with '.': hidden folders are not listed"
            ));
        }
    }
    if parts.len() > MAX_DEPTH {
        return Err(format!(
            "is {} folders deep; adapters are listed at most {MAX_DEPTH} deep",
            parts.len()
        ));
    }
    if name == TRAINED_ROOT {
        return Err(format!(
            "{TRAINED_ROOT:?} is the folder adapters are written under; name one inside it, \
             e.g. \"{TRAINED_ROOT}/my-adapter\""
        ));
    }
    // Under MUSCLE_TRAINED_DIR, where set, the folders from there on; `shown` as named.
    let (root, below) = resolver.root_of(&name);
    let skipped = parts.len() - below.len();
    let mut ancestor = root.to_path_buf();
    for (depth, part) in below.iter().enumerate().take(below.len().saturating_sub(1)) {
        ancestor.push(part);
        let shown = parts[..skipped + depth + 1].join("/");
        match ancestor.symlink_metadata() {
            Err(e) if e.kind() == ErrorKind::NotFound => break,
            Err(e) => return Err(format!("{shown:?} cannot be read: {e}")),
            Ok(_) => {}
        }
        match ancestor.metadata() {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(format!("{shown:?} is a symbolic link to nothing"));
            }
            Err(e) => return Err(format!("{shown:?} cannot be read: {e}")),
            Ok(meta) if !meta.is_dir() => {
                return Err(format!("{shown:?} is a file, not a folder"));
            }
            Ok(_) => {}
        }
        if ancestor.join("config.json").exists() {
            return Err(format!(
                "{shown:?} is a model folder; an adapter inside it would not be listed"
            ));
        }
        if ancestor.join(ADAPTER_CONFIG).exists() {
            return Err(format!(
                "{shown:?} is an adapter folder; an adapter inside it would not be listed"
            ));
        }
    }
    Ok(folder)
}

/// The normalized name and folder of a new adapter: [`output_folder`], and nothing there yet
/// (not even a symbolic link).
pub fn check_new_output(resolver: &Resolver, name: &str) -> Result<(String, PathBuf), String> {
    let folder = output_folder(resolver, name)?;
    match folder.symlink_metadata() {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok((normalized(name), folder)),
        Err(e) => Err(format!("{name:?} cannot be read: {e}")),
        Ok(_) => Err(format!("{name:?} already exists; choose a new name")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, Resolver) {
        let dir = tempfile::tempdir().unwrap();
        let resolver = Resolver::server(dir.path());
        std::fs::create_dir_all(dir.path().join("trained/old")).unwrap();
        std::fs::write(dir.path().join("trained/old/adapter_config.json"), "{}").unwrap();
        std::fs::create_dir_all(dir.path().join("org/model")).unwrap();
        std::fs::write(dir.path().join("org/model/config.json"), "{}").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "a file").unwrap();
        (dir, resolver)
    }

    fn refused(resolver: &Resolver, name: &str) -> String {
        check_new_output(resolver, name).unwrap_err()
    }

    #[test]
    fn a_new_folder_is_accepted_and_normalized() {
        let (dir, resolver) = root();
        let (name, folder) = check_new_output(&resolver, "./trained//new/").unwrap();
        assert_eq!(name, "trained/new");
        assert_eq!(folder, dir.path().join("trained/new"));
        assert_eq!(check_new_output(&resolver, "a/b/c").unwrap().0, "a/b/c");
        assert_eq!(
            check_new_output(&resolver, "org/other").unwrap().0,
            "org/other"
        );
    }

    #[test]
    fn every_unlistable_or_unwritable_output_is_refused() {
        let (dir, resolver) = root();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("dangling")).unwrap();

        let message = refused(&resolver, "notes.txt/adapter");
        assert!(message.contains("\"notes.txt\" is a file"), "{message}");
        let long = "x".repeat(300);
        let message = refused(&resolver, &format!("trained/{long}"));
        assert!(message.contains("300 bytes"), "{message}");
        #[cfg(unix)]
        {
            let message = refused(&resolver, "dangling");
            assert!(message.contains("already exists"), "{message}");
            let message = refused(&resolver, "dangling/adapter");
            assert!(message.contains("symbolic link to nothing"), "{message}");
        }
        for name in ["trained", "trained/", "./trained"] {
            let message = refused(&resolver, name);
            assert!(message.contains("written under"), "{name}: {message}");
        }
        assert!(refused(&resolver, "trained/old").contains("already exists"));
        assert!(refused(&resolver, "org/model").contains("already exists"));
        let message = refused(&resolver, "trained/old/inner");
        assert!(
            message.contains("\"trained/old\" is an adapter folder"),
            "{message}"
        );
        let message = refused(&resolver, "org/model/lora");
        assert!(
            message.contains("\"org/model\" is a model folder"),
            "{message}"
        );
        assert!(refused(&resolver, "trained/.hidden").contains("hidden"));
        assert!(refused(&resolver, "a/b/c/d").contains("at most 3 deep"));
        assert!(refused(&resolver, "../outside").contains(".."));
        assert!(refused(&resolver, "/abs").contains("absolute"));
        assert!(refused(&resolver, "").contains("must name a folder"));
        assert!(refused(&resolver, "./").contains("must name a folder"));
    }

    #[test]
    fn trained_names_go_to_the_trained_dir_where_one_is_set() {
        let (models, _) = root();
        let trained = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(trained.path().join("kept")).unwrap();
        std::fs::write(trained.path().join("kept/adapter_config.json"), "{}").unwrap();
        let resolver =
            Resolver::server(models.path()).with_trained_dir(Some(trained.path().to_path_buf()));

        let (name, folder) = check_new_output(&resolver, "./trained/new").unwrap();
        assert_eq!(name, "trained/new");
        assert_eq!(folder, trained.path().join("new"));
        // models/trained/old is not where trained/ names live any more.
        assert_eq!(
            check_new_output(&resolver, "trained/old").unwrap().1,
            trained.path().join("old")
        );
        let message = refused(&resolver, "trained/kept/inner");
        assert!(
            message.contains("\"trained/kept\" is an adapter folder"),
            "{message}"
        );
        assert!(refused(&resolver, "trained/kept").contains("already exists"));
        assert_eq!(
            check_new_output(&resolver, "org/other").unwrap().1,
            models.path().join("org/other")
        );
    }
}
