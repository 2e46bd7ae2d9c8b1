//! Small pieces several Poplar crates share that belong to no protocol, so that each has one
//! definition: sizes and durations as administrators write them in configuration files and on
//! command lines (`64M`, `2s`, `10m`), with the serde helpers that read them.

#![forbid(unsafe_code)]

pub mod units;
