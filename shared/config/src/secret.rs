//! Secrets that can be rotated without a restart: a setting `NAME` may instead
//! be given as `NAME_FILE`, the path of a file holding the value (as mounted
//! Kubernetes Secrets and many container images do). The file is read again
//! when a value is asked for and it was last checked more than
//! [`RELOAD_INTERVAL`] ago, so a rotated file takes effect within about a
//! second; a file that becomes unreadable or empty keeps the last good value
//! and logs one warning until it is readable again. Neither the value nor its
//! length ever appears in logs or `Debug` output.

use crate::{ConfigError, Env};
use secrecy::{ExposeSecret, SecretString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a secret file is looked at again, at most.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// The suffix that turns a secret setting into the path of a file holding it.
pub const FILE_SUFFIX: &str = "_FILE";

/// A secret's current value: fixed at start, or read from a file that is
/// re-read when it changes. Cheap to clone (shared).
#[derive(Clone)]
pub struct SecretSource(Arc<Source>);

enum Source {
    Fixed(SecretString),
    File(FileSecret),
}

struct FileSecret {
    /// The setting it came from (`NAME_FILE`), for log lines.
    var: String,
    path: PathBuf,
    interval: Duration,
    state: Mutex<FileState>,
}

struct FileState {
    value: SecretString,
    checked_at: Instant,
    /// A warning was logged for the file's current failure.
    warned: bool,
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            Source::Fixed(_) => f.write_str("SecretSource(fixed, [REDACTED])"),
            Source::File(file) => write!(
                f,
                "SecretSource({}={}, [REDACTED])",
                file.var,
                file.path.display()
            ),
        }
    }
}

impl From<SecretString> for SecretSource {
    fn from(value: SecretString) -> Self {
        SecretSource::fixed(value)
    }
}

/// Why a secret file cannot be used.
fn read_file(path: &Path) -> Result<SecretString, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.kind().to_string())?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("the file is empty".to_owned());
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

impl SecretSource {
    /// A value that never changes (`NAME` set directly).
    pub fn fixed(value: SecretString) -> Self {
        SecretSource(Arc::new(Source::Fixed(value)))
    }

    /// A value read from `path` now (an error names `var` when it cannot be
    /// read or is empty) and again, at most every `interval`, when asked for.
    pub fn file(var: &str, path: &Path, interval: Duration) -> Result<Self, ConfigError> {
        let value = read_file(path).map_err(|why| ConfigError {
            var: var.to_owned(),
            shown: path.display().to_string(),
            expected: format!("the path of a readable, non-empty file ({why})"),
        })?;
        Ok(SecretSource(Arc::new(Source::File(FileSecret {
            var: var.to_owned(),
            path: path.to_owned(),
            interval,
            state: Mutex::new(FileState {
                value,
                checked_at: Instant::now(),
                warned: false,
            }),
        }))))
    }

    /// The current value (the file's content without surrounding whitespace).
    pub fn current(&self) -> SecretString {
        match &*self.0 {
            Source::Fixed(value) => value.clone(),
            Source::File(file) => file.current(),
        }
    }

    /// The current value's non-empty lines, each trimmed: a webhook secret
    /// holds the old and the new secret on two lines during a rotation.
    pub fn values(&self) -> Vec<SecretString> {
        split_lines(&self.current())
    }

    /// Whether the value is read from a file (and may change).
    pub fn is_file(&self) -> bool {
        matches!(&*self.0, Source::File(_))
    }
}

/// The non-empty, trimmed lines of `value`.
pub fn split_lines(value: &SecretString) -> Vec<SecretString> {
    value
        .expose_secret()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| SecretString::from(line.to_owned()))
        .collect()
}

impl FileSecret {
    fn current(&self) -> SecretString {
        // A poisoned lock only means another caller panicked mid-check; the
        // state it guards is still a whole value.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked_at.elapsed() >= self.interval {
            state.checked_at = Instant::now();
            // A few hundred bytes read at most once per interval: cheap enough
            // to do inline rather than from a background task.
            match read_file(&self.path) {
                Ok(value) => {
                    if state.warned {
                        tracing::info!(var = %self.var, "secret file readable again");
                        state.warned = false;
                    }
                    if value.expose_secret() != state.value.expose_secret() {
                        tracing::info!(var = %self.var, "secret file changed: the new value is in use");
                        state.value = value;
                    }
                }
                Err(why) if !state.warned => {
                    tracing::warn!(
                        var = %self.var,
                        path = %self.path.display(),
                        error = %why,
                        "secret file cannot be read: keeping the last value read"
                    );
                    state.warned = true;
                }
                Err(_) => {}
            }
        }
        state.value.clone()
    }
}

impl Env {
    /// A secret given as `var` or as `var_FILE` (re-read when it changes);
    /// both set is an error naming `var_FILE`, as is a file that cannot be read.
    pub fn secret_source(&self, var: &str) -> Result<Option<SecretSource>, ConfigError> {
        let file_var = format!("{var}{FILE_SUFFIX}");
        match (self.secret(var), self.raw(&file_var)) {
            (Some(_), Some(path)) => Err(ConfigError {
                var: file_var,
                shown: path.trim().to_owned(),
                expected: format!("{var} or {var}{FILE_SUFFIX}, not both"),
            }),
            (Some(value), None) => Ok(Some(SecretSource::fixed(value))),
            (None, Some(path)) => {
                SecretSource::file(&file_var, Path::new(path.trim()), RELOAD_INTERVAL).map(Some)
            }
            (None, None) => Ok(None),
        }
    }

    /// A secret given as `var` or `var_FILE`, read once at start (for values
    /// that cannot change while the process runs).
    pub fn secret_value(&self, var: &str) -> Result<Option<SecretString>, ConfigError> {
        Ok(self.secret_source(var)?.map(|source| source.current()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(piece: &str) -> String {
        ["fake-", piece, "-0001"].concat()
    }

    #[test]
    fn a_value_and_its_file_together_are_refused_naming_the_file_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, fake("a")).unwrap();
        let path = path.display().to_string();
        let value = fake("b");
        let env = Env::from_pairs([("X_TOKEN", value.as_str()), ("X_TOKEN_FILE", &path)]);
        let err = env.secret_source("X_TOKEN").unwrap_err();
        assert_eq!(err.var, "X_TOKEN_FILE");
        assert!(err.to_string().contains("not both"), "{err}");
        assert!(!err.to_string().contains(&value), "{err}");
    }

    #[test]
    fn the_file_setting_is_read_and_trimmed_and_a_missing_file_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, format!("{}\n", fake("a"))).unwrap();
        let shown = path.display().to_string();
        let env = Env::from_pairs([("X_TOKEN_FILE", shown.as_str())]);
        let source = env.secret_source("X_TOKEN").unwrap().unwrap();
        assert!(source.is_file());
        assert_eq!(source.current().expose_secret(), fake("a"));
        assert_eq!(
            env.secret_value("X_TOKEN")
                .unwrap()
                .unwrap()
                .expose_secret(),
            fake("a")
        );

        let missing = dir.path().join("absent").display().to_string();
        let err = Env::from_pairs([("X_TOKEN_FILE", missing.as_str())])
            .secret_source("X_TOKEN")
            .unwrap_err();
        assert_eq!(err.var, "X_TOKEN_FILE");
        std::fs::write(&path, "\n").unwrap();
        assert!(env.secret_source("X_TOKEN").is_err(), "an empty file");
        assert!(Env::default().secret_source("X_TOKEN").unwrap().is_none());
    }

    #[test]
    fn a_changed_file_is_picked_up_after_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, fake("old")).unwrap();
        let source = SecretSource::file("X_FILE", &path, Duration::ZERO).unwrap();
        assert_eq!(source.current().expose_secret(), fake("old"));
        std::fs::write(&path, fake("new")).unwrap();
        assert_eq!(source.current().expose_secret(), fake("new"));

        let slow = SecretSource::file("X_FILE", &path, Duration::from_secs(3600)).unwrap();
        std::fs::write(&path, fake("newer")).unwrap();
        assert_eq!(slow.current().expose_secret(), fake("new"), "not yet");
    }

    #[test]
    fn an_unreadable_or_emptied_file_keeps_the_last_good_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, fake("good")).unwrap();
        let source = SecretSource::file("X_FILE", &path, Duration::ZERO).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(source.current().expose_secret(), fake("good"));
        assert_eq!(source.current().expose_secret(), fake("good"));
        std::fs::write(&path, "").unwrap();
        assert_eq!(source.current().expose_secret(), fake("good"));
        std::fs::write(&path, fake("next")).unwrap();
        assert_eq!(source.current().expose_secret(), fake("next"));
    }

    #[test]
    fn an_unreadable_file_is_warned_about_once_until_it_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, fake("good")).unwrap();
        let source = SecretSource::file("X_FILE", &path, Duration::ZERO).unwrap();
        let warned = || match &*source.0 {
            Source::File(file) => file.state.lock().unwrap().warned,
            Source::Fixed(_) => unreachable!(),
        };
        std::fs::remove_file(&path).unwrap();
        source.current();
        assert!(warned(), "the first failed read warns");
        source.current();
        assert!(warned(), "and later ones stay quiet under the same flag");
        std::fs::write(&path, fake("good")).unwrap();
        source.current();
        assert!(
            !warned(),
            "a readable file clears it, so a new failure warns again"
        );
    }

    #[test]
    fn debug_output_never_shows_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, fake("hidden")).unwrap();
        let file = SecretSource::file("X_FILE", &path, RELOAD_INTERVAL).unwrap();
        let fixed = SecretSource::fixed(SecretString::from(fake("hidden")));
        for shown in [format!("{file:?}"), format!("{fixed:?}")] {
            assert!(!shown.contains(&fake("hidden")), "{shown}");
            assert!(shown.contains("REDACTED"), "{shown}");
        }
        assert!(format!("{file:?}").contains("X_FILE"));
    }

    #[test]
    fn several_lines_are_several_values() {
        let both = format!("{}\r\n\n  {}  \n", fake("old"), fake("new"));
        let source = SecretSource::fixed(SecretString::from(both));
        let values: Vec<String> = source
            .values()
            .iter()
            .map(|v| v.expose_secret().to_owned())
            .collect();
        assert_eq!(values, [fake("old"), fake("new")]);
    }
}
