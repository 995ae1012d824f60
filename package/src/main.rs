//! `tails-package gen DIR`: the Debian package's man pages and shell
//! completions, generated from the command line's one definition
//! (`tails_server::cli`) so that they cannot drift from it.
//!
//! It writes `DIR/man/*.1` (clap_mangen: `tails-server.1`, one page per
//! command and subcommand such as `tails-server-persistence-create.1`,
//! `tails-server-service.1` for the commands of a service, and
//! `tails-server-gui.1`) and `DIR/completions/` (clap_complete: bash, zsh,
//! fish). `package/build-deb.sh` compresses the pages and hands both to
//! cargo-deb; nothing here knows about the package's layout.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use tails_server::cli::{Cli, ServiceCli};

#[derive(Parser)]
#[command(
    name = "tails-package",
    about = "Generate the Debian package's man pages and completions"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write DIR/man/*.1 and DIR/completions/{tails-server,_tails-server,tails-server.fish}.
    Gen { dir: PathBuf },
}

/// The manual the pages belong to (the `.TH` line's last field).
const MANUAL: &str = "Tails Server";

/// The version the pages name.
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn main() -> Result<()> {
    let Args {
        cmd: Cmd::Gen { dir },
    } = Args::parse();
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot make {}", d.display()))?;
    }
    let pages = man_pages()?;
    for (name, text) in &pages {
        write(&man.join(name), text)?;
    }
    for (name, text) in completion_files() {
        write(&completions.join(name), &text)?;
    }
    println!(
        "{} man pages in {}, completions in {}",
        pages.len(),
        man.display(),
        completions.display()
    );
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// `tails-server <service> …` as a command of its own, named for its pages.
fn service_command() -> clap::Command {
    ServiceCli::command()
        .name("tails-server-service")
        .display_name("tails-server-service")
        .bin_name("tails-server SERVICE")
        .no_binary_name(false)
        .version(VERSION)
}

/// The GUI's page, from its definition in the library.
fn gui_command() -> clap::Command {
    tails_server::cli::GuiArgs::command().version(VERSION)
}

/// Every page: file name and roff text.
fn man_pages() -> Result<Vec<(String, Vec<u8>)>> {
    let mut pages = Vec::new();
    let mut top = Cli::command().disable_help_subcommand(true);
    top.build();
    collect(&top, &mut pages)?;
    let mut service = service_command().disable_help_subcommand(true);
    service.build();
    collect(&service, &mut pages)?;
    let mut gui = gui_command();
    gui.build();
    collect(&gui, &mut pages)?;
    Ok(pages)
}

/// `cmd`'s page and those of its visible subcommands, recursively.
fn collect(cmd: &clap::Command, pages: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    let man = clap_mangen::Man::new(cmd.clone())
        .manual(MANUAL)
        .source(format!("tails-server {VERSION}"));
    let mut text = Vec::new();
    man.render(&mut text).context("rendering a man page")?;
    // clap_mangen heads the after-help text "EXTRA"; the only one there
    // is tails-server's, which lists the service commands.
    let text = String::from_utf8_lossy(&text).replace(".SH EXTRA\n", ".SH SERVICES\n");
    let mut text = text.into_bytes();
    text.extend_from_slice(see_also(related(cmd.get_name())).as_bytes());
    pages.push((man.get_filename(), text));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, pages)?;
    }
    Ok(())
}

/// The pages (section 1) a page's SEE ALSO names.
fn related(name: &str) -> &'static [&'static str] {
    match name {
        "tails-server" => &["tails-server-service", "tails-server-gui"],
        "tails-server-service" => &["tails-server", "tails-server-list"],
        _ => &["tails-server"],
    }
}

/// A SEE ALSO section naming `pages`.
fn see_also(pages: &[&str]) -> String {
    let refs: Vec<String> = pages.iter().map(|p| format!(".BR {p} (1)")).collect();
    format!(".SH \"SEE ALSO\"\n{}\n", refs.join(" ,\n"))
}

/// `tails-server` (`cmd`) without its hidden subcommands: clap_complete
/// would offer them, and clap cannot remove a subcommand, so the rest is
/// copied.
fn visible(cmd: clap::Command) -> clap::Command {
    let mut out = clap::Command::new("tails-server")
        .version(VERSION)
        .allow_external_subcommands(cmd.is_allow_external_subcommands_set());
    for arg in cmd.get_arguments() {
        out = out.arg(arg.clone());
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        out = out.subcommand(sub.clone());
    }
    out
}

/// The completion scripts, under the names their shells look for.
fn completion_files() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for (shell, name) in [
        (Shell::Bash, "tails-server"),
        (Shell::Zsh, "_tails-server"),
        (Shell::Fish, "tails-server.fish"),
    ] {
        let mut cmd = visible(Cli::command());
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd, "tails-server", &mut text);
        out.push((name, text));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(pages: &[(String, Vec<u8>)], name: &str) -> String {
        let (_, text) = pages
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", names(pages)));
        String::from_utf8(text.clone()).unwrap()
    }

    fn names(pages: &[(String, Vec<u8>)]) -> Vec<&str> {
        pages.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn every_visible_command_has_a_page_and_hidden_ones_do_not() {
        let pages = man_pages().unwrap();
        let n = names(&pages);
        for want in [
            "tails-server.1",
            "tails-server-up.1",
            "tails-server-persistence.1",
            "tails-server-persistence-create.1",
            "tails-server-testnet-fetch.1",
            "tails-server-service.1",
            "tails-server-service-set-option.1",
            "tails-server-gui.1",
        ] {
            assert!(n.contains(&want), "{want} missing from {n:?}");
        }
        for hidden in [
            "tails-server-daemon.1",
            "tails-server-probe-kvm.1",
            "tails-server-help.1",
        ] {
            assert!(!n.contains(&hidden), "{hidden} in {n:?}");
        }
        let mut unique = n.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), n.len(), "two pages of one name: {n:?}");
    }

    #[test]
    fn the_pages_say_what_the_cli_says() {
        let pages = man_pages().unwrap();
        let top = page(&pages, "tails-server.1");
        assert!(top.contains(".TH tails-server 1"), "{top}");
        assert!(top.contains("tails\\-server\\-persistence(1)"), "{top}");
        assert!(top.contains(".BR tails-server-service (1)"), "{top}");
        let create = page(&pages, "tails-server-persistence-create.1");
        assert!(create.contains("passphrase\\-file"), "{create}");
        assert!(create.contains("1024"), "the default size: {create}");
        let set = page(&pages, "tails-server-service-set-option.1");
        assert!(set.contains("tails\\-server SERVICE set\\-option"), "{set}");
    }

    #[test]
    fn completions_know_the_commands() {
        let files = completion_files();
        assert_eq!(
            files.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            ["tails-server", "_tails-server", "tails-server.fish"]
        );
        for (name, text) in &files {
            let text = String::from_utf8_lossy(text);
            for word in ["persistence", "autostart", "change-passphrase"] {
                assert!(text.contains(word), "{name} lacks {word}");
            }
            assert!(
                !text.contains("probe-kvm"),
                "{name} offers a hidden command"
            );
        }
    }
}
