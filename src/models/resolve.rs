//! Model and adapter names resolve to folders under MUSCLE_MODEL_DIR, and never outside it;
//! names under `trained/` resolve under MUSCLE_TRAINED_DIR where one is set (a writable volume
//! beside read-only models).

use std::path::{Component, Path, PathBuf};

use crate::engine::folder::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use crate::train::output::TRAINED_ROOT;

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
    /// Where `trained/...` names live when that is not `root/trained`.
    trained: Option<PathBuf>,
    allow_paths: bool,
}

/// A name's root folder, the variable that sets it, and the name's path below that root.
struct Placed<'a> {
    root: &'a Path,
    variable: &'static str,
    rest: PathBuf,
}

impl Resolver {
    pub fn server(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            trained: None,
            allow_paths: false,
        }
    }

    pub fn cli(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            trained: None,
            allow_paths: true,
        }
    }

    /// Names under `trained/` resolve under `dir` instead of `root/trained`.
    pub fn with_trained_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.trained = dir;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// MUSCLE_TRAINED_DIR, where it is set.
    pub fn trained_dir(&self) -> Option<&Path> {
        self.trained.as_deref()
    }

    /// The folder that `name`'s components (`.` and empty ones dropped) are joined under, and
    /// those components: `trained/x` is `x` under MUSCLE_TRAINED_DIR where that is set.
    pub fn root_of<'a>(&'a self, name: &str) -> (&'a Path, Vec<String>) {
        let placed = self.place(name);
        let parts = placed
            .rest
            .components()
            .filter_map(|c| match c {
                Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        (placed.root, parts)
    }

    fn place(&self, name: &str) -> Placed<'_> {
        let path = Path::new(name);
        if let Some(trained) = &self.trained {
            let mut components = path
                .components()
                .skip_while(|c| matches!(c, Component::CurDir));
            if components.next() == Some(Component::Normal(TRAINED_ROOT.as_ref())) {
                return Placed {
                    root: trained,
                    variable: "MUSCLE_TRAINED_DIR",
                    rest: components.collect(),
                };
            }
        }
        Placed {
            root: &self.root,
            variable: "MUSCLE_MODEL_DIR",
            rest: path.to_path_buf(),
        }
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
        let placed = self.place(name);
        let variable = placed.variable;
        let joined = placed.root.join(&placed.rest);
        let root = placed
            .root
            .canonicalize()
            .map_err(|e| format!("{variable} {} is not readable: {e}", placed.root.display()))?;
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
                "{name:?} leads outside {variable} (through a symbolic link)"
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
        let placed = self.place(name);
        let variable = placed.variable;
        let root = placed
            .root
            .canonicalize()
            .map_err(|e| format!("{variable} is not readable: {e}"))?;
        for file in files.iter().filter(|f| f.exists()) {
            let real = file
                .canonicalize()
                .map_err(|e| format!("{name:?}: a file cannot be read: {e}"))?;
            if !real.starts_with(&root) {
                let shown = file.file_name().unwrap_or_default().to_string_lossy();
                return Err(format!(
                    "{name:?}: {shown} leads outside {variable} (through a symbolic link)"
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

    #[test]
    fn trained_names_resolve_under_the_trained_dir_where_one_is_set() {
        let (root, outside) = fixture();
        let trained = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(trained.path().join("compat")).unwrap();
        for file in [ADAPTER_CONFIG, ADAPTER_WEIGHTS] {
            std::fs::write(trained.path().join("compat").join(file), "{}").unwrap();
        }
        std::os::unix::fs::symlink(outside.path(), trained.path().join("escape")).unwrap();
        let resolver =
            Resolver::server(root.path()).with_trained_dir(Some(trained.path().to_path_buf()));

        let path = resolver
            .resolve("./trained/compat", FolderKind::Adapter)
            .unwrap();
        assert_eq!(path, trained.path().join("compat"));
        assert!(
            resolver
                .resolve("org/llama", FolderKind::Model)
                .unwrap()
                .ends_with("org/llama")
        );
        let escape = resolver
            .resolve("trained/escape", FolderKind::Model)
            .unwrap_err();
        assert!(escape.contains("outside MUSCLE_TRAINED_DIR"), "{escape}");
        assert!(
            resolver
                .resolve("trained/../lora", FolderKind::Adapter)
                .unwrap_err()
                .contains("..")
        );
        assert_eq!(resolver.root_of("trained/a/b").1, ["a", "b"]);
        assert_eq!(resolver.root_of("org/llama").0, root.path());
    }
}
