//! chorus client
