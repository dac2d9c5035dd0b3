//! Sourcegram command-host (being built).
#![forbid(unsafe_code)]
