//! The man page and shell completions, generated from the clap tree.
//!
//! `wavemap-agent generate man|complete-bash|complete-zsh` (hidden) prints
//! one of them on stdout; `scripts/build-deb` runs it and ships the output
//! at the Debian paths, so the page and the completions can never describe
//! flags the binary does not have (ripgrep's `--generate` is the model).
//!
//! clap_mangen renders the top-level page (name, synopsis, the long
//! description with the exit codes, global options, the command list); the
//! COMMANDS section after it is written here, one entry per command with
//! its options, because a host has one page, `man wavemap-agent`, not one
//! per subcommand.

use std::io::{self, Write};

use clap::CommandFactory;

use crate::cli::{Cli, Generated};

/// Write `what` to `out`.
pub fn write(what: Generated, out: &mut impl Write) -> io::Result<()> {
    let mut command = Cli::command();
    let shell = match what {
        Generated::Man => return man(command, out),
        Generated::CompleteBash => clap_complete::Shell::Bash,
        Generated::CompleteZsh => clap_complete::Shell::Zsh,
    };
    // clap_complete panics when its writer fails (a closed pipe): render
    // into memory, then write, so a failed write is an error.
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut command, "wavemap-agent", &mut buf);
    if shell == clap_complete::Shell::Bash {
        buf = fix_bash_states(&buf);
    }
    out.write_all(&buf)
}

/// clap_complete's bash script spells a subcommand's state two ways for a
/// name with a hyphen: the loop that walks the words arrives at
/// `wavemap__agent__subcmd__runtime`, the `case` arms are labelled
/// `wavemap__subcmd__agent__subcmd__runtime`, so nothing after the first
/// word completes (clap-rs/clap issue 6421, open for clap_complete 4.6).
/// Spell the arms the way the loop does; a no-op once upstream agrees.
fn fix_bash_states(script: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(script)
        .replace("wavemap__subcmd__agent", "wavemap__agent")
        .into_bytes()
}

fn man(command: clap::Command, out: &mut impl Write) -> io::Result<()> {
    let mut command = command;
    command.build();
    let page = clap_mangen::Man::new(command.clone());
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    page.render_description_section(out)?;
    page.render_options_section(out)?;
    writeln!(out, ".SH COMMANDS")?;
    writeln!(
        out,
        "Mutating commands are dry runs unless given \\fB\\-\\-execute\\fR. \
         The global options above apply to every command."
    )?;
    for (path, sub) in leaves(&command, Vec::new()) {
        writeln!(out, ".SS \"{}\"", roff(&path.join(" ")))?;
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            writeln!(out, "{}", text(&about.to_string()))?;
        }
        for arg in sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_global_set())
            .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        {
            writeln!(out, ".TP")?;
            writeln!(out, "{}", arg_label(arg))?;
            if let Some(help) = arg.get_long_help().or(arg.get_help()) {
                writeln!(out, "{}", text(&help.to_string()))?;
            }
        }
    }
    writeln!(out, ".SH FILES")?;
    writeln!(
        out,
        ".TP\n/etc/wavemap\\-agent/agent.toml\nThe configuration (\\fBconfig check\\fR validates it)."
    )?;
    writeln!(
        out,
        ".TP\n/usr/share/wavemap\\-agent/ssm\\-documents/\nThe SSM Run Command documents CI sends."
    )?;
    writeln!(out, ".SH \"SEE ALSO\"")?;
    writeln!(
        out,
        "/usr/share/doc/wavemap\\-agent/README.md, and the manual in the source tree's docs/."
    )?;
    if let Some(version) = command.get_version() {
        writeln!(out, ".SH VERSION\nv{}", roff(version))?;
    }
    Ok(())
}

/// Every runnable command below `command` (not hidden), with its words.
fn leaves(command: &clap::Command, path: Vec<String>) -> Vec<(Vec<String>, clap::Command)> {
    let mut out = Vec::new();
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        let mut words = path.clone();
        if words.is_empty() {
            words.push(command.get_name().to_owned());
        }
        words.push(sub.get_name().to_owned());
        if sub.has_subcommands() {
            out.extend(leaves(sub, words));
        } else {
            out.push((words, sub.clone()));
        }
    }
    out
}

/// `\fB\-\-flag\fR \fIVALUE\fR` or `\fB\-v\fR, \fB\-\-verbose\fR`.
fn arg_label(arg: &clap::Arg) -> String {
    let mut names = Vec::new();
    if let Some(short) = arg.get_short() {
        names.push(format!("\\fB\\-{}\\fR", roff(&short.to_string())));
    }
    if let Some(long) = arg.get_long() {
        names.push(format!("\\fB\\-\\-{}\\fR", roff(long)));
    }
    if names.is_empty() {
        // A positional argument.
        return format!("\\fI{}\\fR", roff(arg.get_id().as_str()));
    }
    let mut label = names.join(", ");
    let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
    if takes_value {
        let value = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map_or_else(|| "VALUE".to_owned(), |v| v.to_string());
        label.push_str(&format!(" \\fI{}\\fR", roff(&value)));
    }
    label
}

/// Escape roff's specials inside a line.
fn roff(s: &str) -> String {
    s.replace('\\', "\\e").replace('-', "\\-")
}

/// A paragraph of text: escaped, and no line may start with a control
/// character (`.` or `'`).
fn text(s: &str) -> String {
    roff(s)
        .lines()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n.br\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(what: Generated) -> String {
        let mut out = Vec::new();
        write(what, &mut out).expect("render");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn man_page_names_every_command_and_no_hidden_one() {
        let page = render(Generated::Man);
        assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
        for words in ["runtime deploy", "runtime receipt", "database reset"] {
            assert!(
                page.contains(&format!(".SS \"wavemap\\-agent {}\"", roff(words))),
                "{words} missing"
            );
        }
        assert!(page.contains("\\-\\-backend\\-image"));
        assert!(!page.contains("wavemap\\-agent generate"));
    }

    #[test]
    fn completions_know_the_subcommands() {
        let bash = render(Generated::CompleteBash);
        assert!(bash.contains("record-release"), "{bash}");
        // Every state the word loop can reach has its case arm.
        assert!(bash.contains("cmd=\"wavemap__agent__subcmd__runtime\""));
        assert!(bash.contains("\n        wavemap__agent__subcmd__runtime)\n"));
        assert!(!bash.contains("wavemap__subcmd__agent"));
        let zsh = render(Generated::CompleteZsh);
        assert!(zsh.starts_with("#compdef wavemap-agent"), "{zsh}");
    }
}
