//! `chatlake check`: a pipeline parses, resolves and reaches its sources.

use std::process::ExitCode;

use super::*;

/// `chatlake check`: the pipeline loads (syntax, keys, variables), then
/// one request per source, each bounded in time.
pub(super) async fn check(file: &Path) -> Result<ExitCode> {
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(60);
    let p = Pipeline::load(file)?;
    outln!(
        "pipeline {} ({}): parsed, every variable resolved, timezone {}",
        p.config.name,
        file.display(),
        p.config.timezone
    )?;
    let sources = crate::extract::build_all(&p.sources, &p.build_ctx(Utc::now()))?;
    // Every source at once: an unreachable one retries for a while.
    let outcomes = futures::future::join_all(sources.iter().map(|source| async move {
        match tokio::time::timeout(LIMIT, source.check()).await {
            Ok(Ok(seen)) => {
                let streams: Vec<String> = source.streams().into_iter().map(|s| s.name).collect();
                Ok(format!(
                    "reachable, credentials accepted ({seen}); streams: {}",
                    streams.join(", ")
                ))
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} s", LIMIT.as_secs())),
        }
    }))
    .await;
    // What personal data these streams copy, stored as the API sends it.
    let mut personal: std::collections::BTreeSet<String> = Default::default();
    for source in &sources {
        for spec in source.streams() {
            for t in spec.tables {
                personal.extend(t.personal_columns().map(|(c, _)| format!("{}.{c}", t.name)));
            }
        }
    }
    let mut failed = 0;
    for (cfg, outcome) in p.sources.iter().zip(outcomes) {
        match outcome {
            Ok(line) => outln!("{:<14} ok      {line}", cfg.name())?,
            Err(e) => {
                failed += 1;
                outln!(
                    "{:<14} FAILED  {}",
                    cfg.name(),
                    crate::config::secret::clean(&e)
                )?;
            }
        }
    }
    if let Some(privacy) = &p.config.privacy {
        let said: Vec<String> = crate::schema::Personal::CONFIGURABLE
            .iter()
            .map(|k| format!("{} {}", k.as_str(), privacy.action(*k).as_str()))
            .collect();
        outln!(
            "privacy: {}; {} column override(s)",
            said.join(", "),
            privacy.columns.len()
        )?;
    } else if !personal.is_empty() {
        outln!(
            "warning: personal data is stored in plain text: {} columns of these streams hold names, emails, phones, IP addresses or what people wrote (e.g. {}); add a [privacy] section (see \"Personal data\" in the README)",
            personal.len(),
            personal.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        )?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
