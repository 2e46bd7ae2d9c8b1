//! Small pieces several Poplar crates share that belong to no protocol, so that each has one
//! definition: sizes and durations as administrators write them in configuration files and on
//! command lines (`64M`, `2s`, `10m`), with the serde helpers that read them ([`units`]); the
//! wall clock and the date formats of mail ([`clock`]); this machine's name and descriptor limit ([`host`]); file
//! locks that are not fooled by a child process between `fork` and `exec` ([`flock`]).

#![forbid(unsafe_code)]

pub mod clock;
pub mod flock;
pub mod host;
pub mod units;
