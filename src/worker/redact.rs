//! Job errors are shown to API users: the server's own folders are named by their variable,
//! never by their path on the host.

use std::path::Path;

/// Replaces each folder (as configured and with links resolved) by its label.
#[derive(Debug, Clone, Default)]
pub struct PathRedactor {
    /// (path text, label), longest first so that a folder inside another wins.
    prefixes: Vec<(String, String)>,
}

impl PathRedactor {
    pub fn new(folders: &[(&Path, &str)]) -> Self {
        let mut prefixes = Vec::new();
        for (folder, label) in folders {
            let mut forms = vec![folder.to_path_buf()];
            if let Ok(canonical) = folder.canonicalize() {
                forms.push(canonical);
            }
            if let Ok(cwd) = std::env::current_dir() {
                forms.push(cwd.join(folder));
            }
            for form in forms {
                let text = form.to_string_lossy().trim_end_matches('/').to_string();
                if text.len() > 1 && !prefixes.iter().any(|(p, _)| *p == text) {
                    prefixes.push((text, label.to_string()));
                }
            }
        }
        prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        Self { prefixes }
    }

    pub fn redact(&self, message: &str) -> String {
        self.prefixes
            .iter()
            .fold(message.to_string(), |text, (prefix, label)| {
                text.replace(prefix.as_str(), label)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_folders_become_their_variables() {
        let models = tempfile::tempdir().unwrap();
        let data = models.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let redactor = PathRedactor::new(&[
            (models.path(), "$MUSCLE_MODEL_DIR"),
            (&data, "$MUSCLE_DATA_DIR"),
        ]);
        let message = format!(
            "cannot read {}/llama/model.safetensors; checkpoint {}/checkpoints/x",
            models.path().display(),
            data.display()
        );
        assert_eq!(
            redactor.redact(&message),
            "cannot read $MUSCLE_MODEL_DIR/llama/model.safetensors; checkpoint \
             $MUSCLE_DATA_DIR/checkpoints/x"
        );
    }
}
