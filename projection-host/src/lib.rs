//! Sourcegram projection-host (being built).
#![forbid(unsafe_code)]
