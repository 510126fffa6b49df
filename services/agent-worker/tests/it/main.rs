//! Integration tests of the agent worker (added in the next commit).
