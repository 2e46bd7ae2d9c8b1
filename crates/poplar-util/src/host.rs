//! This machine, read in one place: its name (for Maildir file names, LMTP's LHLO, the APOP
//! greeting and the welcome message) and the descriptor limit every program that holds many
//! connections raises (the server, the load generator).

/// The system host name (Linux's `/proc/sys/kernel/hostname`), or `localhost`.
pub fn name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Raises this process's soft limit on open files to the hard limit; returns the limit now in
/// force (0 when it cannot be read).
pub fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_name_without_white_space() {
        let name = super::name();
        assert!(
            !name.is_empty() && !name.contains(char::is_whitespace),
            "{name:?}"
        );
    }
}
