//! `chatlake state show|reset`: the watermarks of a pipeline.

use std::process::ExitCode;

use super::*;

/// What `chatlake state` does.
#[derive(Debug, Subcommand)]
pub enum StateAction {
    /// Print each stream's watermark.
    Show {
        /// Pipeline file (TOML).
        #[arg(long)]
        pipeline: PathBuf,
        #[command(flatten)]
        wh: WarehouseArg,
        /// `text` for people; `json`: an array of {stream, watermark,
        /// updated_at, run_id} (watermark null when there is none).
        #[arg(long, value_enum, default_value = "text")]
        format: TextOrJson,
    },
    /// Forget watermarks (all streams, or one): the next run starts at start_date.
    Reset {
        /// Pipeline file (TOML).
        #[arg(long)]
        pipeline: PathBuf,
        #[command(flatten)]
        wh: WarehouseArg,
        /// Only this stream (SOURCE.STREAM).
        #[arg(long)]
        stream: Option<String>,
    },
}

/// Runs `chatlake state`.
pub async fn execute(action: StateAction) -> Result<ExitCode> {
    match action {
        StateAction::Show {
            pipeline,
            wh,
            format,
        } => {
            let p = Pipeline::load(&pipeline)?;
            let wh = existing_warehouse(wh.warehouse, Some(&p))?;
            let states = StateStore::new(&wh, &p.config.name).list().await?;
            if format == TextOrJson::Json {
                let doc: Vec<_> = states
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "stream": s.stream,
                            "watermark": s.watermark.map(|d| d.to_string()),
                            "updated_at": s.updated_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                            "run_id": s.run_id,
                        })
                    })
                    .collect();
                outln!("{:#}", serde_json::Value::from(doc))?;
                return Ok(ExitCode::SUCCESS);
            }
            if states.is_empty() {
                outln!("no state for pipeline {} in {wh}", p.config.name)?;
            }
            for s in states {
                let wm = s.watermark.map_or("-".to_string(), |d| d.to_string());
                outln!(
                    "{:<32} watermark {wm:<10}  updated {}  run {}",
                    s.stream,
                    s.updated_at.format("%Y-%m-%dT%H:%M:%SZ"),
                    s.run_id
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        StateAction::Reset {
            pipeline,
            wh,
            stream,
        } => {
            let p = Pipeline::load(&pipeline)?;
            let wh = existing_warehouse(wh.warehouse, Some(&p))?;
            let store = StateStore::new(&wh, &p.config.name);
            if let Some(s) = &stream {
                // A typo must not look like success: the stream must be
                // configured, or at least have a state to forget.
                let configured: Vec<String> =
                    crate::extract::build_all(&p.sources, &p.build_ctx(Utc::now()))?
                        .iter()
                        .flat_map(|src| src.streams())
                        .map(|spec| spec.name)
                        .collect();
                let stored = store.list().await?.iter().any(|st| &st.stream == s);
                if !stored && !configured.contains(s) {
                    return Err(Error::Usage(format!(
                        "state reset --stream {s}: no such stream in pipeline {} (configured: {})",
                        p.config.name,
                        configured.join(", ")
                    )));
                }
            }
            let removed = store.reset(stream.as_deref()).await?;
            outln!(
                "reset {} stream(s){}",
                removed.len(),
                if removed.is_empty() {
                    String::new()
                } else {
                    format!(": {}", removed.join(", "))
                }
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
