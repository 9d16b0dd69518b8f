//! The `chatlake` binary: parse the command line, set up logging, run the
//! command, and turn the outcome into an exit code (0 ok, 1 failed, 2 usage).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Stack size of every thread that plans or runs queries.
const STACK: usize = 256 << 20;

/// glibc's malloc serves only C code here (Rust allocates with mimalloc):
/// above all zstd, which creates a compression and a decompression context
/// for every Parquet column chunk a query reads, and frees them when the
/// chunk is read. With glibc's defaults each free trims the arena back to
/// the kernel and the next context faults its pages in again: about 10% of
/// the time of `reporting.response_times` through the server (BENCHMARKS.md,
/// "Statistics kept, C memory kept"). Keep freed memory for reuse instead.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_c_memory() {
    // SAFETY: mallopt only sets two of glibc's tunables; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    keep_freed_c_memory();
    let cli = chatlake::cli::Cli::parse();
    let interactive = std::io::stderr().is_terminal();
    // On a terminal the progress bar tells the story; elsewhere, tracing lines do.
    let default_level = if interactive { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_level.into());
    let writer = || chatlake::config::secret::RedactingWriter(std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match cli.log_format {
        chatlake::cli::LogFormat::Json => {
            chatlake::output::set_json_stderr(true);
            logs.json().init()
        }
        chatlake::cli::LogFormat::Text => logs.with_ansi(interactive).init(),
    }
    // Large stacks (reserved, committed only as used): planning a query
    // recurses once per operator, up to query::MAX_OPERATORS.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(STACK)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = std::thread::Builder::new()
        .name("chatlake-main".into())
        .stack_size(STACK)
        .spawn(move || runtime.block_on(chatlake::cli::execute(cli, interactive)))
        .map_err(|e| chatlake::Error::io("starting the main thread", e))
        .and_then(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
    match outcome {
        Ok(code) => code,
        // `chatlake query ... | head`: the reader went away. Exit quietly
        // with 141, as a Unix tool killed by SIGPIPE does.
        Err(chatlake::Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            ExitCode::from(141)
        }
        Err(e) => {
            // Every error's message already includes its cause.
            chatlake::output::error(&e.to_string());
            match e {
                chatlake::Error::Usage(_) | chatlake::Error::Config { .. } => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
