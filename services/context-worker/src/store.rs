//! The worker's shared analysis store: codemap's Redis store under the fleet's
//! key prefix, its values sealed with `CACHE_ENCRYPTION_KEY` (docs/design.md §7) when set.

use contexten_cache::Sealer;
use contexten_codemap::{AnalysisStore, CodemapError};

/// Seals values on the way into `inner` and opens them on the way out; the entry's
/// key is the associated data, so a value cannot be moved to another key.
#[derive(Debug)]
pub struct SealedStore<S> {
    inner: S,
    sealer: Sealer,
}

impl<S: AnalysisStore> SealedStore<S> {
    /// Wraps `inner`; with a plain [`Sealer`] values are stored in clear.
    pub fn new(inner: S, sealer: Sealer) -> Self {
        SealedStore { inner, sealer }
    }
}

impl<S: AnalysisStore> AnalysisStore for SealedStore<S> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CodemapError> {
        let Some(sealed) = self.inner.get(key)? else {
            return Ok(None);
        };
        // An entry written under another key (or in clear before the key was set)
        // is a miss: the analysis is redone and the entry overwritten.
        Ok(self.sealer.open(key, &sealed).ok())
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), CodemapError> {
        self.inner.put(key, &self.seal(key, value)?)
    }

    fn put_map(&self, key: &str, value: &[u8]) -> Result<(), CodemapError> {
        self.inner.put_map(key, &self.seal(key, value)?)
    }
}

impl<S> SealedStore<S> {
    fn seal(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, CodemapError> {
        self.sealer
            .seal(key, value)
            .map_err(|e| CodemapError::Cache(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contexten_cache::EncryptionKey;
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct Memory(Mutex<HashMap<String, Vec<u8>>>);

    impl AnalysisStore for &Memory {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CodemapError> {
            Ok(self.0.lock().unwrap().get(key).cloned())
        }
        fn put(&self, key: &str, value: &[u8]) -> Result<(), CodemapError> {
            self.0.lock().unwrap().insert(key.into(), value.into());
            Ok(())
        }
    }

    #[test]
    fn sealed_values_hide_their_content_and_need_the_same_key() {
        let memory = Memory::default();
        let key = EncryptionKey::from_bytes([7; 32]);
        let sealed = SealedStore::new(&memory, Sealer::new(Some(&key)));
        sealed.put("a", b"fn total_with_tax").unwrap();
        assert_eq!(
            sealed.get("a").unwrap().as_deref(),
            Some(&b"fn total_with_tax"[..])
        );
        let raw = memory.0.lock().unwrap()["a"].clone();
        assert!(!raw.windows(5).any(|w| w == b"total"), "stored encrypted");

        let other = SealedStore::new(
            &memory,
            Sealer::new(Some(&EncryptionKey::from_bytes([8; 32]))),
        );
        assert_eq!(other.get("a").unwrap(), None, "another key misses");
        let plain = SealedStore::new(&memory, Sealer::new(None));
        assert_eq!(plain.get("a").unwrap(), None, "no key misses");
        memory.0.lock().unwrap().insert("b".into(), raw);
        assert_eq!(
            sealed.get("b").unwrap(),
            None,
            "a value moved to another key misses"
        );
    }
}
