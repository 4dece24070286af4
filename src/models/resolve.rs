//! Model and adapter names resolve to folders under MUSCLE_MODEL_DIR, and never outside it.

use std::path::{Component, Path, PathBuf};

use crate::engine::folder::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FolderKind {
    Model,
    Adapter,
    /// The tokenizer of a model served elsewhere (an endpoint side).
    Tokenizer,
}

impl FolderKind {
    /// Files that make a folder of this kind.
    pub fn required_files(self) -> &'static [&'static str] {
        match self {
            Self::Model => &["config.json"],
            Self::Adapter => &[ADAPTER_CONFIG, ADAPTER_WEIGHTS],
            Self::Tokenizer => &["tokenizer.json"],
        }
    }
}

/// Where names resolve: the server accepts only names under the root, the CLI also paths.
#[derive(Debug, Clone)]
pub struct Resolver {
    root: PathBuf,
    allow_paths: bool,
}

impl Resolver {
    pub fn server(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            allow_paths: false,
        }
    }

    pub fn cli(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            allow_paths: true,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves `name` to an existing folder of `kind`, or says why not.
    pub fn resolve(&self, name: &str, kind: FolderKind) -> Result<PathBuf, String> {
        if name.trim().is_empty() {
            return Err("must not be empty".into());
        }
        if self.allow_paths {
            let as_path = Path::new(name);
            if as_path.is_absolute() || as_path.exists() {
                return check_folder(as_path, name, kind);
            }
        }
        let folder = self.confined(name)?;
        check_folder(&folder, name, kind)
    }

    /// `name` joined under the root, refusing absolute paths, `..` and symlinks that escape.
    /// The folder need not exist (training outputs are checked this way before they are written).
    pub fn confined(&self, name: &str) -> Result<PathBuf, String> {
        let path = Path::new(name);
        for component in path.components() {
            match component {
                Component::Normal(_) => {}
                Component::CurDir => {}
                Component::ParentDir => return Err(format!("{name:?} must not contain '..'")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(format!(
                        "{name:?} must be a name under MUSCLE_MODEL_DIR, not an absolute path"
                    ));
                }
            }
        }
        let joined = self.root.join(path);
        let root = self.root.canonicalize().map_err(|e| {
            format!(
                "MUSCLE_MODEL_DIR {} is not readable: {e}",
                self.root.display()
            )
        })?;
        // Canonicalise the deepest existing ancestor so a symlink anywhere on the way is seen.
        let mut existing = joined.as_path();
        while !existing.exists() {
            match existing.parent() {
                Some(parent) => existing = parent,
                None => break,
            }
        }
        let real = existing
            .canonicalize()
            .map_err(|e| format!("{name:?} cannot be read: {e}"))?;
        if !real.starts_with(&root) {
            return Err(format!(
                "{name:?} leads outside MUSCLE_MODEL_DIR (through a symbolic link)"
            ));
        }
        Ok(joined)
    }
}

impl Resolver {
    /// Checks that every one of `files` (paths in a resolved folder) that exists lies inside the
    /// root once symbolic links are followed: a weights file linked out of MUSCLE_MODEL_DIR is
    /// refused like a folder that is. The CLI, which accepts any path, checks nothing.
    pub fn files_inside(&self, name: &str, files: &[PathBuf]) -> Result<(), String> {
        if self.allow_paths {
            return Ok(());
        }
        let root = self
            .root
            .canonicalize()
            .map_err(|e| format!("MUSCLE_MODEL_DIR is not readable: {e}"))?;
        for file in files.iter().filter(|f| f.exists()) {
            let real = file
                .canonicalize()
                .map_err(|e| format!("{name:?}: a file cannot be read: {e}"))?;
            if !real.starts_with(&root) {
                let shown = file.file_name().unwrap_or_default().to_string_lossy();
                return Err(format!(
                    "{name:?}: {shown} leads outside MUSCLE_MODEL_DIR (through a symbolic link)"
                ));
            }
        }
        Ok(())
    }
}

fn check_folder(folder: &Path, name: &str, kind: FolderKind) -> Result<PathBuf, String> {
    let what = match kind {
        FolderKind::Model => "model",
        FolderKind::Adapter => "adapter",
        FolderKind::Tokenizer => "tokenizer",
    };
    if !folder.is_dir() {
        return Err(format!("no {what} folder named {name:?}"));
    }
    for file in kind.required_files() {
        if !folder.join(file).is_file() {
            return Err(format!(
                "{name:?} is not a {what} folder: {file} is missing"
            ));
        }
    }
    Ok(folder.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, tempfile::TempDir) {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("org/llama")).unwrap();
        std::fs::write(root.path().join("org/llama/config.json"), "{}").unwrap();
        std::fs::create_dir_all(root.path().join("lora")).unwrap();
        std::fs::write(root.path().join("lora/adapter_config.json"), "{}").unwrap();
        std::fs::write(outside.path().join("config.json"), "{}").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        (root, outside)
    }

    #[test]
    fn names_resolve_under_the_root() {
        let (root, _outside) = fixture();
        let resolver = Resolver::server(root.path());
        let path = resolver.resolve("org/llama", FolderKind::Model).unwrap();
        assert!(path.ends_with("org/llama"));
    }

    #[test]
    fn escapes_and_typos_are_refused_with_a_reason() {
        let (root, outside) = fixture();
        let resolver = Resolver::server(root.path());
        let err = |name: &str, kind| resolver.resolve(name, kind).unwrap_err();
        assert!(err("../etc", FolderKind::Model).contains(".."));
        assert!(err("org/../../x", FolderKind::Model).contains(".."));
        let absolute = outside.path().to_str().unwrap().to_string();
        assert!(err(&absolute, FolderKind::Model).contains("absolute"));
        assert!(err("escape", FolderKind::Model).contains("outside"));
        assert!(err("org/llamma", FolderKind::Model).contains("no model folder"));
        assert!(err("lora", FolderKind::Adapter).contains("adapter_model.safetensors"));
        assert!(err("", FolderKind::Model).contains("empty"));
    }

    #[test]
    fn the_cli_also_takes_paths() {
        let (root, outside) = fixture();
        let resolver = Resolver::cli(root.path());
        let absolute = outside.path().to_str().unwrap().to_string();
        assert!(resolver.resolve(&absolute, FolderKind::Model).is_ok());
    }
}
