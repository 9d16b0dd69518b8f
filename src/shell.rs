//! The SQL shell: `chatlake sql` (or `chatlake query` without SQL).
//!
//! On a terminal it is a line editor (rustyline) with history in
//! `$XDG_STATE_HOME/chatlake/history` (else `~/.local/state/chatlake/history`);
//! fed from a pipe it reads lines without prompts. Either way a statement
//! ends with `;` and may span lines; each result is printed as it comes, and
//! an error is printed and the shell goes on (exit 1 at the end if any
//! statement failed). `\q`, `quit` or `exit` leaves, as does end of input.

use std::io::BufRead;
use std::process::ExitCode;

use crate::error::{Error, Result};
use crate::query::{self, Format, Session};

const PROMPT: &str = "chatlake> ";
const MORE: &str = "      ...> ";

/// Runs the shell over `session` until the user leaves.
pub async fn run(session: &Session, format: Format, terminal: bool) -> Result<ExitCode> {
    let mut failed = false;
    let mut buffer = String::new();
    let mut lines = Lines::open(terminal)?;
    if terminal {
        eprintln!("chatlake SQL shell: end each statement with `;`; `SHOW TABLES;` lists the tables; \\q to quit.");
    }
    loop {
        let line = match lines.next(if buffer.is_empty() { PROMPT } else { MORE })? {
            Line::Text(line) => line,
            Line::End => break,
            // Ctrl-C drops the statement being typed, as in psql.
            Line::Interrupted => {
                buffer.clear();
                continue;
            }
            Line::Invalid(why) => {
                failed = true;
                crate::output::error(&format!("{why}; the line is skipped"));
                continue;
            }
        };
        let trimmed = line.trim();
        // `\q` leaves even in the middle of a statement (as in psql).
        if trimmed == "\\q" || buffer.is_empty() && ["quit", "exit", ".quit"].contains(&trimmed) {
            break;
        }
        if trimmed.is_empty() && buffer.is_empty() {
            continue;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if !complete(&buffer) {
            continue;
        }
        let text = std::mem::take(&mut buffer);
        lines.remember(text.trim());
        failed |= outcome(run_text(session, &text, format).await)?;
    }
    if !buffer.trim().is_empty() {
        // Input ended inside a statement: run what there is.
        failed |= outcome(run_text(session, &buffer, format).await)?;
    }
    lines.save();
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Whether a statement failed; a closed stdout ends the shell (it is
/// returned, so that `chatlake sql | head` exits as `query` does).
fn outcome(r: Result<()>) -> Result<bool> {
    match r {
        Ok(()) => Ok(false),
        Err(Error::Io { source, context }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            Err(Error::Io { source, context })
        }
        Err(e) => {
            crate::output::error(&e.to_string());
            Ok(true)
        }
    }
}

/// Whether `text` ends a statement: its last SQL token (comments and
/// blanks aside) is `;`, outside any string, quoted name or comment, as the
/// SQL tokenizer reads it.
fn complete(text: &str) -> bool {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Whitespace};
    // An unterminated string or comment: more lines to come.
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, text).tokenize() else {
        return false;
    };
    tokens
        .iter()
        .rev()
        .find(|t| {
            !matches!(
                t,
                Token::Whitespace(
                    Whitespace::Space
                        | Whitespace::Newline
                        | Whitespace::Tab
                        | Whitespace::SingleLineComment { .. }
                        | Whitespace::MultiLineComment(_)
                )
            )
        })
        .is_some_and(|t| *t == Token::SemiColon)
}

/// Every statement of `text`, each result printed as it comes.
async fn run_text(session: &Session, text: &str, format: Format) -> Result<()> {
    for sql in query::split_statements(text)? {
        let w = std::io::BufWriter::new(std::io::stdout());
        let (_, _, nonfinite) =
            query::write_result(session, &sql, w, crate::output::ResultFormat::Text(format))
                .await?;
        if let Some(note) = crate::output::nonfinite_note(nonfinite) {
            crate::output::note(&note);
        }
    }
    Ok(())
}

/// One line of input.
enum Line {
    Text(String),
    /// Ctrl-C.
    Interrupted,
    /// A line that could not be read (not UTF-8): why, naming the line.
    Invalid(String),
    End,
}

/// Where lines come from: the line editor, or plain stdin.
enum Lines {
    Editor(Box<rustyline::DefaultEditor>, Option<std::path::PathBuf>),
    /// Standard input, and the number of the last line read.
    Plain(std::io::StdinLock<'static>, usize),
}

impl Lines {
    fn open(terminal: bool) -> Result<Lines> {
        if !terminal {
            return Ok(Lines::Plain(std::io::stdin().lock(), 0));
        }
        let mut editor = rustyline::DefaultEditor::new()
            .map_err(|e| Error::Usage(format!("starting the line editor: {e}")))?;
        let history = history_file();
        if let Some(h) = &history {
            let _ = editor.load_history(h); // none yet on first use
        }
        Ok(Lines::Editor(Box::new(editor), history))
    }

    /// The next line; [`Line::End`] at end of input (or Ctrl-D).
    fn next(&mut self, prompt: &str) -> Result<Line> {
        match self {
            Lines::Plain(stdin, number) => {
                let mut bytes = Vec::new();
                let n = stdin
                    .read_until(b'\n', &mut bytes)
                    .map_err(|e| Error::io("reading SQL from stdin", e))?;
                if n == 0 {
                    return Ok(Line::End);
                }
                *number += 1;
                match String::from_utf8(bytes) {
                    Ok(line) => Ok(Line::Text(line.trim_end_matches(['\n', '\r']).to_string())),
                    Err(e) => Ok(Line::Invalid(format!(
                        "line {number} of the input is not UTF-8 (byte {} of the line)",
                        e.utf8_error().valid_up_to() + 1
                    ))),
                }
            }
            Lines::Editor(editor, _) => match editor.readline(prompt) {
                Ok(line) => Ok(Line::Text(line)),
                Err(rustyline::error::ReadlineError::Interrupted) => Ok(Line::Interrupted),
                Err(rustyline::error::ReadlineError::Eof) => Ok(Line::End),
                Err(e) => Err(Error::Usage(format!("reading a line: {e}"))),
            },
        }
    }

    /// A finished statement goes into the history (terminal only).
    fn remember(&mut self, statement: &str) {
        if let Lines::Editor(editor, _) = self {
            let _ = editor.add_history_entry(statement);
        }
    }

    fn save(&mut self) {
        if let Lines::Editor(editor, Some(path)) = self {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if let Err(e) = editor.save_history(path) {
                eprintln!("note: history not saved to {}: {e}", path.display());
            }
        }
    }
}

fn history_file() -> Option<std::path::PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".local/state"))
        })?;
    Some(state.join("chatlake").join("history"))
}

#[cfg(test)]
mod tests {
    use super::complete;

    #[test]
    fn a_statement_ends_at_a_semicolon_outside_strings_and_comments() {
        assert!(complete("SELECT 1;\n"));
        assert!(complete("SELECT 1; -- don't\n"));
        assert!(complete("SELECT 1; /* it's */\n"));
        assert!(complete("SELECT 'a;b';\n"));
        assert!(!complete("SELECT 'a;\n"));
        assert!(!complete("SELECT 1 -- end;\n"));
        assert!(!complete("SELECT 1 /* ;\n"));
        assert!(!complete("SELECT \"x;\n"));
        assert!(!complete("SELECT 1\n"));
    }
}
