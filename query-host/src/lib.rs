//! Sourcegram query-host (being built).
#![forbid(unsafe_code)]
