//! Sizes (`64M`, `512k`, `1 GiB`, plain octets) and durations (`2s`, `500ms`, `10m`, `1h`,
//! plain seconds), one syntax for the server's configuration, the fetch client's accounts file
//! and every command line.

use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

/// Splits `"64M"` or `"2 s"` into the leading decimal number and the trimmed unit after it.
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    Some((number.parse().ok()?, unit.trim()))
}

/// Parses `"2s"`, `"500ms"`, `"10m"`, `"1h"` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let (n, unit) = number_and_unit(text)?;
    let secs = match unit {
        "ms" => return Some(Duration::from_millis(n)),
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// Parses a size: octets, or a number with a K, M or G suffix (powers of 1024).
pub fn parse_size(text: &str) -> Option<u64> {
    let (n, unit) = number_and_unit(text)?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// A number or a text, as a TOML value holding a size or a duration may be written.
#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Number(u64),
    Text(String),
}

/// serde: a size, as octets or text (`deserialize_with = "poplar_util::units::size"`).
pub fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Raw::deserialize(d)? {
        Raw::Number(n) => Ok(n),
        Raw::Text(t) => parse_size(&t).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid size {t:?}: use octets or a number with K, M or G, e.g. \"64M\""
            ))
        }),
    }
}

/// serde: an optional size (`#[serde(default, deserialize_with = "...::optional_size")]`).
pub fn optional_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    size(d).map(Some)
}

/// serde: a duration, as seconds or text.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match Raw::deserialize(d)? {
        Raw::Number(n) => Ok(Duration::from_secs(n)),
        Raw::Text(t) => parse_duration(&t).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid duration {t:?}: use a number with ms, s, m or h, e.g. \"2s\" or \"10m\""
            ))
        }),
    }
}

/// serde: an optional duration.
pub fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// A duration as [`parse_duration`] reads it: `500ms`, `2s`, `10m`, `1h` (the largest unit that
/// divides it).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        s if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        s if s.is_multiple_of(60) => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A size as [`parse_size`] reads it: `64M`, `512K`, `1G`, or octets.
pub fn format_size(octets: u64) -> String {
    match octets {
        0 => "0".into(),
        n if n.is_multiple_of(1 << 30) => format!("{}G", n >> 30),
        n if n.is_multiple_of(1 << 20) => format!("{}M", n >> 20),
        n if n.is_multiple_of(1 << 10) => format!("{}K", n >> 10),
        n => n.to_string(),
    }
}

/// serde: a size as text (`serialize_with = "poplar_util::units::write_size"`).
pub fn write_size<S: Serializer>(octets: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_size(*octets))
}

/// serde: a duration as text.
pub fn write_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("512k"), Some(512 << 10));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("1 GiB"), Some(1 << 30));
        assert_eq!(parse_size("99999999999G"), None);
        assert_eq!(parse_size("5T"), None);
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        for bad in ["", "s", "1d", "-1s", "1.5s", "99999999999999999999h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_read_back() {
        for d in [250, 2000, 600_000, 3_600_000, 90_000, 0] {
            let d = Duration::from_millis(d);
            assert_eq!(parse_duration(&format_duration(d)), Some(d), "{d:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        for n in [0, 1000, 1 << 10, 64 << 20, 3 << 30, 1_048_577] {
            assert_eq!(parse_size(&format_size(n)), Some(n), "{n}");
        }
        assert_eq!(format_size(64 << 20), "64M");
    }

    #[test]
    fn serde_forms() {
        #[derive(Deserialize)]
        struct T {
            #[serde(default, deserialize_with = "optional_size")]
            max: Option<u64>,
            #[serde(deserialize_with = "duration")]
            wait: Duration,
        }
        let t: T = toml::from_str("max = \"10M\"\nwait = \"2s\"").unwrap();
        assert_eq!((t.max, t.wait), (Some(10 << 20), Duration::from_secs(2)));
        let t: T = toml::from_str("max = 1000\nwait = 3").unwrap();
        assert_eq!((t.max, t.wait), (Some(1000), Duration::from_secs(3)));
        let t: T = toml::from_str("wait = 3").unwrap();
        assert_eq!(t.max, None);
        let e = toml::from_str::<T>("max = \"ten\"\nwait = 3")
            .err()
            .unwrap();
        assert!(e.to_string().contains("invalid size \"ten\""), "{e}");
    }
}
