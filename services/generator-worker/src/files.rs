//! The generator's only way to repository file contents, and the redactor for
//! everything it puts in a prompt. Both are codemap's, so the generator and the
//! context worker refuse the same files and remove the same secrets.
//!
//! The order is the point: a path codemap's sensitive-path filter refuses
//! (`.env*`, `id_rsa`, key and certificate files, credential stores) is refused
//! before [`FileSource::read_file`] is called, so naming such a file in a
//! request (or in a generated diff) can never make the worker read it.

use crate::repo::{RepoError, RepoReader, Snapshot};
use contexten_codemap::redact::{self, RedactionCounts};
use std::future::Future;

/// Where file contents come from: the task's repository snapshot (a fake in tests).
pub trait FileSource: Sync {
    /// The file at `path`, `Ok(None)` when it does not exist.
    fn read_file(
        &self,
        snapshot: &Snapshot,
        path: &str,
    ) -> impl Future<Output = Result<Option<String>, RepoError>> + Send;
}

impl FileSource for RepoReader {
    fn read_file(
        &self,
        snapshot: &Snapshot,
        path: &str,
    ) -> impl Future<Output = Result<Option<String>, RepoError>> + Send {
        self.read(snapshot, path)
    }
}

/// Why a file was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("`{0}` is a sensitive file (environment, key or credentials) and is never read")]
    Refused(String),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// The path to read when codemap's filter admits it: `./`, empty segments and
/// backslashes are normalised first, so `./.env` or `config\.env` cannot slip
/// past the file-name check.
pub fn admit(path: &str) -> Result<String, ReadError> {
    let normal = path
        .trim()
        .split(['/', '\\'])
        .filter(|part| !part.is_empty() && *part != ".")
        .collect::<Vec<_>>()
        .join("/");
    if redact::is_sensitive_path(&normal) {
        return Err(ReadError::Refused(normal));
    }
    Ok(normal)
}

/// The file's exact contents, for applying a diff; checked by [`admit`] first.
pub async fn read_raw(
    source: &impl FileSource,
    snapshot: &Snapshot,
    path: &str,
) -> Result<Option<String>, ReadError> {
    let path = admit(path)?;
    Ok(source.read_file(snapshot, &path).await?)
}

/// The file's contents for a prompt: checked by [`admit`] first, then redacted.
pub async fn read_for_prompt(
    source: &impl FileSource,
    snapshot: &Snapshot,
    path: &str,
) -> Result<Option<String>, ReadError> {
    Ok(read_raw(source, snapshot, path).await?.map(redact))
}

/// `text` with every secret codemap recognises replaced by `[REDACTED:<kind>]`.
pub fn redact(text: impl Into<String>) -> String {
    let mut counts = RedactionCounts::new();
    let clean = redact::redact_string(text.into(), &mut counts);
    if !counts.is_empty() {
        // Kinds and counts only: never a value.
        tracing::info!(redactions = ?counts, "secrets redacted from prompt text");
    }
    clean
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Files in memory; records every path a read was attempted for.
    #[derive(Default)]
    pub(crate) struct FakeFiles {
        pub files: HashMap<String, String>,
        pub attempted: Mutex<Vec<String>>,
    }

    impl FakeFiles {
        pub fn with(files: &[(&str, &str)]) -> Self {
            FakeFiles {
                files: files
                    .iter()
                    .map(|(p, c)| ((*p).to_owned(), (*c).to_owned()))
                    .collect(),
                attempted: Mutex::default(),
            }
        }

        pub fn attempted(&self) -> Vec<String> {
            self.attempted.lock().unwrap().clone()
        }
    }

    impl FileSource for FakeFiles {
        async fn read_file(
            &self,
            _snapshot: &Snapshot,
            path: &str,
        ) -> Result<Option<String>, RepoError> {
            self.attempted.lock().unwrap().push(path.to_owned());
            Ok(self.files.get(path).cloned())
        }
    }

    pub(crate) fn snapshot() -> Snapshot {
        Snapshot::Local {
            root: "/nonexistent".into(),
            reference: None,
        }
    }

    #[tokio::test]
    async fn a_refused_file_is_never_read() {
        let fake = FakeFiles::with(&[(".env", "GREETING=mellon"), ("id_rsa", "key")]);
        for path in [
            ".env",
            "./.env",
            "config//.env.local",
            "config\\.env",
            " id_rsa ",
            "home/.ssh/id_ed25519",
            "certs/server.pem",
            ".aws/credentials",
            "deploy/.git-credentials",
        ] {
            let refused = read_for_prompt(&fake, &snapshot(), path).await;
            assert!(
                matches!(refused, Err(ReadError::Refused(_))),
                "{path}: {refused:?}"
            );
            assert!(matches!(
                read_raw(&fake, &snapshot(), path).await,
                Err(ReadError::Refused(_))
            ));
        }
        assert!(fake.attempted().is_empty(), "{:?}", fake.attempted());
    }

    #[tokio::test]
    async fn an_admitted_file_is_read_once_and_redacted() {
        let secret = ["hunter", "2-prod-", "Zx81"].concat();
        let fake = FakeFiles::with(&[(
            "app/settings.py",
            &format!("DB_PASSWORD = \"{secret}\"\nDEBUG = False\n"),
        )]);
        let text = read_for_prompt(&fake, &snapshot(), "./app/settings.py")
            .await
            .unwrap()
            .unwrap();
        assert!(!text.contains(&secret), "{text}");
        assert!(text.contains("DB_PASSWORD = \"[REDACTED:"), "{text}");
        assert!(text.contains("DEBUG = False"));
        assert_eq!(fake.attempted(), ["app/settings.py"]);
        // The raw read (for applying diffs) keeps the bytes.
        let raw = read_raw(&fake, &snapshot(), "app/settings.py").await;
        assert!(raw.unwrap().unwrap().contains(&secret));
    }
}
