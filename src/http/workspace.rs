//! Which directories an agent may work in.

use std::io;
use std::path::{Path, PathBuf};

use http::StatusCode;

use crate::openai::ApiError;

/// The allowed workspace roots and the default workspace.
///
/// A requested workspace is resolved (symlinks and `..` included) before it is checked, so a path cannot
/// escape the roots by its spelling.
#[derive(Debug, Clone)]
pub struct WorkspacePolicy {
    roots: Vec<PathBuf>,
    default: PathBuf,
}

impl WorkspacePolicy {
    /// Agents may work in `roots` and below them; a request that names no workspace gets `default`, which
    /// must itself lie in a root. Fails if a root or the default does not exist.
    pub fn new(
        roots: impl IntoIterator<Item = PathBuf>,
        default: impl AsRef<Path>,
    ) -> io::Result<Self> {
        let roots = roots
            .into_iter()
            .map(|root| {
                std::fs::canonicalize(&root).map_err(|e| {
                    io::Error::new(e.kind(), format!("workspace root {}: {e}", root.display()))
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        if roots.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "at least one workspace root is needed",
            ));
        }
        let default = std::fs::canonicalize(default.as_ref()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("default workspace {}: {e}", default.as_ref().display()),
            )
        })?;
        if !roots.iter().any(|root| default.starts_with(root)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the default workspace {} is outside every workspace root",
                    default.display()
                ),
            ));
        }
        Ok(Self { roots, default })
    }

    /// Only `root` (which is also the default workspace).
    pub fn single(root: impl AsRef<Path>) -> io::Result<Self> {
        Self::new([root.as_ref().to_path_buf()], root)
    }

    /// The allowed roots, resolved.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// The workspace for a request that asked for `requested`: the default when it asked for none,
    /// otherwise the resolved path, if it is an existing directory inside a root (403 if not).
    pub async fn resolve(&self, requested: Option<&Path>) -> Result<PathBuf, ApiError> {
        let forbidden = |message: String| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "permission_error",
                "workspace_not_allowed",
                message,
            )
        };
        let Some(requested) = requested else {
            // Checked at start-up, but it may have been removed since.
            return if is_dir(&self.default) {
                Ok(self.default.clone())
            } else {
                Err(forbidden(format!(
                    "the default workspace {} no longer exists",
                    self.default.display()
                )))
            };
        };
        if !requested.is_absolute() {
            return Err(forbidden(format!(
                "workspace {} is not an absolute path",
                requested.display()
            )));
        }
        let resolved = match std::fs::canonicalize(requested) {
            Ok(resolved) if is_dir(&resolved) => resolved,
            Ok(_) | Err(_) => {
                return Err(forbidden(format!(
                    "workspace {} does not exist or is not a directory",
                    requested.display()
                )));
            }
        };
        if self.roots.iter().any(|root| resolved.starts_with(root)) {
            Ok(resolved)
        } else {
            Err(forbidden(format!(
                "workspace {} is outside the allowed workspace roots",
                requested.display()
            )))
        }
    }
}

/// Called on the runtime's thread, like [`std::fs::canonicalize`] above: a workspace is a local directory,
/// whose few `stat` calls take a microsecond or two. Handing them to Tokio's blocking pool (`tokio::fs`)
/// made a whole request through the stack five times slower: 47 µs against 9 µs (`benches/hot_paths.rs`,
/// `layer_stack/small_streamed_turn`).
fn is_dir(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.is_dir())
}
