//! Hardened git for untrusted repositories (see README "Security model").
