//! Trust boundaries (see README "Security model").
