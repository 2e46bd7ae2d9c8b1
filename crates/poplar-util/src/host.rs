//! This machine's name, read in one place: for Maildir file names, LMTP's LHLO, the APOP
//! greeting and the welcome message.

/// The system host name (Linux's `/proc/sys/kernel/hostname`), or `localhost`.
pub fn name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
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
