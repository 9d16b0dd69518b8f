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

use crate::config::secret::redact;
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
    while let Some(line) = lines.next(if buffer.is_empty() { PROMPT } else { MORE })? {
        let trimmed = line.trim();
        if buffer.is_empty() && ["\\q", "quit", "exit", ".quit"].contains(&trimmed) {
            break;
        }
        if trimmed.is_empty() && buffer.is_empty() {
            continue;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        // Not finished: no `;` at the end, or inside a quoted string.
        if !trimmed.ends_with(';') || buffer.matches('\'').count() % 2 == 1 {
            continue;
        }
        let text = std::mem::take(&mut buffer);
        lines.remember(text.trim());
        if let Err(e) = run_text(session, &text, format).await {
            failed = true;
            eprintln!("error: {}", redact(&e.to_string()));
        }
    }
    if !buffer.trim().is_empty() {
        // Input ended inside a statement: run what there is.
        if let Err(e) = run_text(session, &buffer, format).await {
            failed = true;
            eprintln!("error: {}", redact(&e.to_string()));
        }
    }
    lines.save();
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Every statement of `text`, each result printed.
async fn run_text(session: &Session, text: &str, format: Format) -> Result<()> {
    for sql in query::split_statements(text)? {
        let batches = query::run(session, &sql).await?;
        let mut out = query::render(&batches, format)?;
        if format == Format::Table {
            out.push('\n');
        }
        use std::io::Write as _;
        write!(std::io::stdout().lock(), "{out}").map_err(|e| Error::io("writing to stdout", e))?;
    }
    Ok(())
}

/// Where lines come from: the line editor, or plain stdin.
enum Lines {
    Editor(Box<rustyline::DefaultEditor>, Option<std::path::PathBuf>),
    Plain(std::io::StdinLock<'static>),
}

impl Lines {
    fn open(terminal: bool) -> Result<Lines> {
        if !terminal {
            return Ok(Lines::Plain(std::io::stdin().lock()));
        }
        let mut editor = rustyline::DefaultEditor::new()
            .map_err(|e| Error::Usage(format!("starting the line editor: {e}")))?;
        let history = history_file();
        if let Some(h) = &history {
            let _ = editor.load_history(h); // none yet on first use
        }
        Ok(Lines::Editor(Box::new(editor), history))
    }

    /// The next line, None at end of input (or Ctrl-D).
    fn next(&mut self, prompt: &str) -> Result<Option<String>> {
        match self {
            Lines::Plain(stdin) => {
                let mut line = String::new();
                let n = stdin
                    .read_line(&mut line)
                    .map_err(|e| Error::io("reading SQL from stdin", e))?;
                Ok((n > 0).then(|| line.trim_end_matches(['\n', '\r']).to_string()))
            }
            Lines::Editor(editor, _) => match editor.readline(prompt) {
                Ok(line) => Ok(Some(line)),
                // Ctrl-C drops the statement being typed, as in psql.
                Err(rustyline::error::ReadlineError::Interrupted) => Ok(Some(String::new())),
                Err(rustyline::error::ReadlineError::Eof) => Ok(None),
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
