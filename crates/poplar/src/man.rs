//! `poplar man DIR` and `poplar completions SHELL`: the manual pages and shell completions a
//! distribution installs, made from the same sources as everything else. poplar(1) and one
//! page per subcommand come from the command-line definitions (clap_mangen); poplar.toml(5)
//! is docs/configuration.md, compiled into the binary and rendered to roff here, so the page
//! never says something the documentation does not.

use anyhow::{Context, Result};
use clap::CommandFactory;
use roff::{Roff, bold, italic, roman};
use std::path::{Path, PathBuf};

/// The configuration reference, as the repository has it.
const CONFIGURATION: &str = include_str!("../../../docs/configuration.md");

/// Writes every page into `dir` (created if missing); returns the files written.
pub(crate) fn write_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(crate::Cli::command(), dir)
        .with_context(|| format!("cannot write manual pages into {}", dir.display()))?;
    let config = dir.join("poplar.toml.5");
    std::fs::write(&config, configuration_page(CONFIGURATION))
        .with_context(|| format!("cannot write {}", config.display()))?;
    let mut written: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("poplar") && (n.ends_with(".1") || n.ends_with(".5"))
            })
        })
        .collect();
    written.sort();
    Ok(written)
}

/// Prints the completion script for `shell` (a reader that stops early is not an error).
pub(crate) fn print_completions(shell: clap_complete::Shell) -> Result<()> {
    use std::io::Write as _;
    let mut cmd = crate::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "poplar", &mut script);
    match std::io::stdout().lock().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write the completion script")
        }
        _ => Ok(()),
    }
}

/// poplar.toml(5) from the Markdown of docs/configuration.md: headings become sections, each
/// table row a tagged paragraph (key, default, meaning), code blocks stay verbatim, and
/// `code` spans turn bold.
pub(crate) fn configuration_page(markdown: &str) -> String {
    let mut page = Roff::new();
    page.control("TH", ["POPLAR.TOML", "5"])
        .control("SH", ["NAME"])
        .text([roman("poplar.toml \\- the configuration of poplar(1)")]);
    let mut in_code = false;
    // The paragraph being gathered, and its list marker when it is a list item.
    let mut paragraph: Vec<&str> = Vec::new();
    let mut marker: Option<String> = None;
    let flush = |page: &mut Roff, paragraph: &mut Vec<&str>, marker: &mut Option<String>| {
        if !paragraph.is_empty() {
            match marker.take() {
                Some(m) => page.control("IP", [m.as_str(), "4"]),
                None => page.control("PP", []),
            };
            page.text(inline(&paragraph.join(" ")));
            paragraph.clear();
        }
    };
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            flush(&mut page, &mut paragraph, &mut marker);
            in_code = !in_code;
            page.control(if in_code { "nf" } else { "fi" }, []);
            continue;
        }
        if in_code {
            page.text([roman(line)]);
            continue;
        }
        if let Some(title) = line.strip_prefix("# ") {
            flush(&mut page, &mut paragraph, &mut marker);
            page.control("SH", ["DESCRIPTION"])
                .text([italic(title.trim())]);
        } else if let Some(title) = line.strip_prefix("## ") {
            flush(&mut page, &mut paragraph, &mut marker);
            page.control("SH", [title.trim().to_uppercase().as_str()]);
        } else if let Some(title) = line.strip_prefix("### ") {
            flush(&mut page, &mut paragraph, &mut marker);
            page.control("SS", [title.trim().trim_matches('`')]);
        } else if line.starts_with('|') {
            flush(&mut page, &mut paragraph, &mut marker);
            let cells: Vec<&str> = line
                .trim()
                .trim_matches('|')
                .split(" | ")
                .map(str::trim)
                .collect();
            let header = cells
                .first()
                .is_some_and(|c| *c == "key" || c.starts_with("---"));
            if header
                || cells
                    .iter()
                    .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
            {
                continue;
            }
            if let [key, default, meaning, ..] = cells.as_slice() {
                page.control("TP", []);
                let mut tag = inline(key);
                tag.push(roman(format!(" (default: {})", strip_code(default))));
                page.text(tag).text(inline(meaning));
            } else {
                page.control("PP", []).text(inline(&cells.join(" ")));
            }
        } else if line.trim().is_empty() {
            flush(&mut page, &mut paragraph, &mut marker);
        } else if let Some((item, rest)) = list_item(line) {
            flush(&mut page, &mut paragraph, &mut marker);
            marker = Some(item);
            paragraph.push(rest);
        } else {
            paragraph.push(line.trim());
        }
    }
    flush(&mut page, &mut paragraph, &mut marker);
    page.control("SH", ["SEE ALSO"])
        .text([roman("poplar(1), poplar-serve(1), poplar-check-config(1)")]);
    page.render()
}

/// A Markdown list item's marker (a bullet, or `N.`) and its text.
fn list_item(line: &str) -> Option<(String, &str)> {
    let trimmed = line.trim_start();
    if let Some(rest) = trimmed.strip_prefix("- ") {
        return Some(("\u{2022}".to_owned(), rest));
    }
    let (number, rest) = trimmed.split_once(". ")?;
    (!number.is_empty() && number.chars().all(|c| c.is_ascii_digit()))
        .then(|| (format!("{number}."), rest))
}

/// Markdown inline text: `code` spans in bold, the rest roman, links reduced to their text.
fn inline(text: &str) -> Vec<roff::Inline> {
    let mut out = Vec::new();
    for (i, part) in text.split('`').enumerate() {
        if part.is_empty() {
            continue;
        }
        if i % 2 == 1 {
            out.push(bold(part));
        } else {
            out.push(roman(part.replace("**", "")));
        }
    }
    out
}

fn strip_code(text: &str) -> String {
    text.replace('`', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_page_carries_every_key_of_the_reference() {
        let page = configuration_page(CONFIGURATION);
        assert!(page.contains("\n.TH POPLAR.TOML 5\n"), "{}", &page[..200]);
        for key in [
            "data_dir",
            "max_message_size",
            "proxy_from",
            "pool_size",
            "login_delay",
        ] {
            assert!(page.contains(key), "{key} missing");
        }
        // Every table row of the reference is a tagged paragraph.
        let rows = CONFIGURATION
            .lines()
            .filter(|l| l.starts_with("| `"))
            .count();
        assert_eq!(page.matches("\n.TP\n").count(), rows);
        // Lines starting with a dot or a quote would be read as requests: roff escapes them.
        assert!(
            !page
                .lines()
                .any(|l| l.starts_with(". ") || l.starts_with('\''))
        );
    }

    #[test]
    fn pages_are_written_for_every_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_pages(dir.path()).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for page in [
            "poplar.1",
            "poplar-serve.1",
            "poplar-user-add.1",
            "poplar-db-move-user.1",
            "poplar.toml.5",
        ] {
            assert!(names.iter().any(|n| n == page), "{page} missing: {names:?}");
        }
    }
}
