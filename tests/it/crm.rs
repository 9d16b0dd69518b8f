//! CRM against the simulator: exact rows with tags as lists, a second run
//! that rewrites only the changed rows and their partitions, deletions marked
//! (and undone), the company filter, clear errors, rejects, and the company
//! views. Expected figures come from the simulator's model (CrmData, SiData)
//! and chrono-tz, never from the pipeline's code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chatlake::config::Pipeline;
use chatlake::pipeline::{run_once, RunOptions, RunReport};
use chatlake::simulator::{CrmData, Faults, SiData, SimConfig, Simulator};
use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::support::*;

const KEY: &str = "crm-SECRET-5d21aa";
const TZ: chrono_tz::Tz = chrono_tz::America::New_York;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 11, 7, 12, 0, 0).unwrap()
}

/// Eight UTC days of conversations around the 2025-11-02 fall-back night.
fn crm_data(per_day: u32) -> CrmData {
    let mut data = CrmData::new(d("2025-10-28"), d("2025-11-04"), per_day);
    data.api_key = KEY.into();
    data.now = Some(now());
    data
}

fn crm_pipeline(sim: &Simulator, key: &str, extra: &str, with_socialintents: bool) -> String {
    let si = if with_socialintents {
        format!(
            "[sources.socialintents]\nbase_url = \"{}\"\naccount_id = \"acct\"\napi_token = \"{TOKEN}\"\nstreams = [\"chats\", \"missed_chats\"]\nrequests_per_minute = 600000\n",
            sim.base_url("socialintents")
        )
    } else {
        String::new()
    };
    format!(
        r#"name = "crm"
timezone = "America/New_York"
start_date = "2025-10-25"
[http]
max_attempts = 8
backoff_base_ms = 5
backoff_max_ms = 100
[sources.crm]
base_url = "{}"
api_key = "{key}"
streams = ["companies", "contacts", "conversations"]
requests_per_minute = 600000
{extra}
{si}"#,
        sim.base_url("crm")
    )
}

async fn crm_env(crm: CrmData, si: SiData, extra: &str, with_socialintents: bool) -> Env {
    let config = SimConfig {
        socialintents: si,
        crm,
        fault_seed: 3,
        ..empty_sim_config()
    };
    let config = if with_socialintents {
        config.with_crm_contacts_for_visitors(2)
    } else {
        config
    };
    env_from(config, "crm.toml", |sim| {
        crm_pipeline(sim, KEY, extra, with_socialintents)
    })
    .await
}

async fn run_at(env: &Env, at: DateTime<Utc>) -> RunReport {
    let opts = RunOptions {
        now: Some(at),
        to: Some(at.with_timezone(&TZ).date_naive()),
        ..RunOptions::default()
    };
    let report = run_once(&env.pipeline, &env.wh, &opts).await.unwrap();
    let failures: Vec<_> = report
        .failures()
        .map(|s| s.error.clone().unwrap_or_default())
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
    report
}

fn local(t: DateTime<Utc>) -> String {
    t.with_timezone(&TZ).date_naive().to_string()
}

/// Every CRM file (relative to the warehouse) and its bytes.
fn crm_files(env: &Env) -> BTreeMap<PathBuf, Vec<u8>> {
    let wh = env.dir.path().join("wh");
    files(&wh.join("crm"))
        .into_iter()
        .map(|f| {
            (
                f.strip_prefix(&wh).unwrap().to_path_buf(),
                std::fs::read(&f).unwrap(),
            )
        })
        .collect()
}

fn changed_files(
    before: &BTreeMap<PathBuf, Vec<u8>>,
    after: &BTreeMap<PathBuf, Vec<u8>>,
) -> BTreeSet<String> {
    let names: BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter(|p| before.get(*p) != after.get(*p))
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

/// Asserts the warehouse holds exactly the simulator's live records (and
/// nothing live that the simulator no longer has).
async fn assert_crm_exact(env: &Env) {
    let data = env.sim.config().crm;
    let live =
        |table: &str, key: &str| format!("SELECT {key} FROM crm.{table} WHERE deleted_at IS NULL");
    let companies: BTreeSet<Vec<String>> = data
        .companies()
        .iter()
        .map(|c| vec![c.id.clone(), c.updated.timestamp_micros().to_string()])
        .collect();
    let got: BTreeSet<Vec<String>> = env
        .rows(&live("companies", "company_id, CAST(updated_at AS BIGINT)"))
        .await
        .into_iter()
        .collect();
    assert_eq!(got, companies, "companies");
    let contacts: BTreeSet<Vec<String>> = data
        .contacts()
        .iter()
        .map(|c| vec![c.id.clone(), c.company_id.clone(), c.email.clone()])
        .collect();
    let got: BTreeSet<Vec<String>> = env
        .rows(&live("contacts", "contact_id, company_id, email"))
        .await
        .into_iter()
        .collect();
    assert_eq!(got, contacts, "contacts");
    let convs: BTreeSet<Vec<String>> = data
        .conversations()
        .iter()
        .filter(|c| !c.malformed)
        .map(|c| {
            vec![
                c.id.clone(),
                c.created.timestamp_micros().to_string(),
                local(c.created),
                c.status.to_string(),
                c.tags.join("|"),
            ]
        })
        .collect();
    let rows = env
        .rows(&live("conversations", "conversation_id, CAST(created_at AS BIGINT), CAST(dt AS VARCHAR), status, array_to_string(tags, '|')"))
        .await;
    let n = rows.len();
    let got: BTreeSet<Vec<String>> = rows
        .into_iter()
        .map(|mut r| {
            if r[4] == "NULL" {
                r[4] = String::new();
            }
            r
        })
        .collect();
    assert_eq!(n, got.len(), "duplicate conversations");
    assert_eq!(got, convs, "conversations");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_rows_with_tags_as_lists() {
    let env = crm_env(
        crm_data(10),
        SiData::new(d("2025-10-25"), d("2025-10-25"), 0),
        "",
        false,
    )
    .await;
    let report = run_at(&env, now()).await;
    assert_crm_exact(&env).await;
    let data = env.sim.config().crm;
    let convs = data.conversations();
    assert!(convs.iter().any(|c| c.tags.len() >= 2) && convs.iter().any(|c| c.tags.is_empty()));
    // Tags are a real list: element by element.
    let c = convs.iter().find(|c| c.tags.len() >= 2).unwrap();
    let got = env.rows(&format!("SELECT tags[1], tags[2], cardinality(tags) FROM crm.conversations WHERE conversation_id = '{}'", c.id)).await;
    assert_eq!(
        got[0],
        vec![
            c.tags[0].clone(),
            c.tags[1].clone(),
            c.tags.len().to_string()
        ]
    );
    // One request per endpoint; every record received was written.
    for s in &report.streams {
        assert_eq!(s.pages, 1, "{}", s.stream);
        assert_eq!(s.records, s.rows_written, "{}", s.stream);
    }
    for f in files(&env.dir.path().join("wh")) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
            "API key in {}",
            f.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_rewrites_only_changed_rows_and_their_partitions() {
    let env = crm_env(
        crm_data(10),
        SiData::new(d("2025-10-25"), d("2025-10-25"), 0),
        "",
        false,
    )
    .await;
    let first = run_at(&env, now()).await;
    let before = crm_files(&env);
    let data = env.sim.config().crm;
    let (companies, contacts, convs) = (data.companies(), data.contacts(), data.conversations());
    let edited: Vec<String> = vec![
        companies[1].id.clone(),
        contacts[2].id.clone(),
        contacts[7].id.clone(),
        convs[3].id.clone(),
        convs[25].id.clone(),
        convs[61].id.clone(),
    ];
    let deleted: Vec<String> = vec![
        companies[4].id.clone(),
        contacts[5].id.clone(),
        convs[40].id.clone(),
    ];
    let later = now() + Duration::hours(2);
    env.sim.update(|c| {
        for id in &edited {
            c.crm.edits.insert(id.clone(), now() + Duration::hours(1));
        }
        c.crm.deleted.extend(deleted.iter().cloned());
        c.crm.now = Some(later);
    });
    let second = run_at(&env, later).await;
    assert_crm_exact(&env).await;
    // Exactly the edited rows carry the second run's id.
    let rewritten: BTreeSet<String> = env
        .rows(&format!(
            "SELECT company_id FROM crm.companies WHERE _run_id = '{0}' UNION ALL SELECT contact_id FROM crm.contacts WHERE _run_id = '{0}' \
             UNION ALL SELECT conversation_id FROM crm.conversations WHERE _run_id = '{0}'",
            second.run_id
        ))
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(rewritten, edited.iter().cloned().collect());
    // The deleted ones are kept, marked at the run's time, with their first-run data.
    let marked = env
        .rows(
            "SELECT company_id, _run_id, CAST(deleted_at AS BIGINT) FROM crm.companies WHERE deleted_at IS NOT NULL UNION ALL \
             SELECT contact_id, _run_id, CAST(deleted_at AS BIGINT) FROM crm.contacts WHERE deleted_at IS NOT NULL UNION ALL \
             SELECT conversation_id, _run_id, CAST(deleted_at AS BIGINT) FROM crm.conversations WHERE deleted_at IS NOT NULL",
        )
        .await;
    let marked: BTreeMap<String, (String, String)> = marked
        .into_iter()
        .map(|r| (r[0].clone(), (r[1].clone(), r[2].clone())))
        .collect();
    let expected: BTreeMap<String, (String, String)> = deleted
        .iter()
        .map(|id| {
            (
                id.clone(),
                (first.run_id.clone(), later.timestamp_micros().to_string()),
            )
        })
        .collect();
    assert_eq!(marked, expected);
    // Files rewritten: the two dimension tables, and only the conversation
    // partitions that hold an edited or deleted conversation.
    let after = crm_files(&env);
    let mut expected_files: BTreeSet<String> = [
        "crm/companies/data.parquet".to_string(),
        "crm/contacts/data.parquet".to_string(),
    ]
    .into_iter()
    .collect();
    for c in convs
        .iter()
        .filter(|c| edited.contains(&c.id) || deleted.contains(&c.id))
    {
        expected_files.insert(format!(
            "crm/conversations/dt={}/data.parquet",
            local(c.created)
        ));
    }
    let changed = changed_files(&before, &after);
    assert_eq!(changed, expected_files);
    assert!(
        expected_files.len() < after.len(),
        "some partitions were left alone"
    );
    let written: BTreeMap<String, u64> = second
        .streams
        .iter()
        .map(|s| (s.stream.clone(), s.rows_written))
        .collect();
    assert_eq!(written["crm.conversations"], 4);
    assert_eq!(written["crm.contacts"], 3);
    // Nothing changed: nothing written.
    let quiet = later + Duration::hours(1);
    env.sim.update(|c| c.crm.now = Some(quiet));
    let third = run_at(&env, quiet).await;
    assert!(third.streams.iter().all(|s| s.rows_written == 0));
    assert_eq!(
        crm_files(&env),
        after,
        "an unchanged source rewrites no file"
    );
    // A deleted conversation that comes back is live again.
    let back = deleted[2].clone();
    env.sim.update(|c| {
        c.crm.deleted.remove(&back);
    });
    run_at(&env, quiet + Duration::hours(1)).await;
    assert_crm_exact(&env).await;
    assert_eq!(env.int(&format!("SELECT COUNT(*) FROM crm.conversations WHERE conversation_id = '{back}' AND deleted_at IS NULL")).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_company_filter_reads_per_company_and_marks_only_its_own_rows() {
    let env = crm_env(
        crm_data(10),
        SiData::new(d("2025-10-25"), d("2025-10-25"), 0),
        "",
        false,
    )
    .await;
    run_at(&env, now()).await;
    let data = env.sim.config().crm;
    let companies = data.companies();
    let chosen = [companies[0].id.clone(), companies[2].id.clone()];
    let text = crm_pipeline(
        &env.sim,
        KEY,
        &format!(
            "company_ids = [\"{}\", \"{}\"]\nmax_concurrency = 2",
            chosen[0], chosen[1]
        ),
        false,
    );
    std::fs::write(&env.pipeline_file, text).unwrap();
    let pipeline = Pipeline::load(&env.pipeline_file).unwrap();
    // Delete a conversation of a chosen company and one of another company.
    let convs = data.conversations();
    let mine = convs
        .iter()
        .find(|c| c.company_id == chosen[0])
        .unwrap()
        .id
        .clone();
    let other = convs
        .iter()
        .find(|c| !c.company_id.is_empty() && !chosen.contains(&c.company_id))
        .unwrap()
        .id
        .clone();
    env.sim.update(|c| {
        c.crm.deleted.insert(mine.clone());
        c.crm.deleted.insert(other.clone());
    });
    let before = env.sim.requests();
    let opts = RunOptions {
        now: Some(now() + Duration::hours(1)),
        ..RunOptions::default()
    };
    env.sim.set_faults(Faults {
        latency_ms: 50,
        ..Faults::default()
    });
    let report = run_once(&pipeline, &env.wh, &opts).await.unwrap();
    assert_eq!(report.failures().count(), 0);
    // The two companies' bodies were fetched at once (max_concurrency = 2).
    assert_eq!(env.sim.most_in_flight("crm"), 2);
    let asked = |k: &str| env.sim.requests()[k] - before.get(k).copied().unwrap_or(0);
    assert_eq!(
        (
            asked("crm/companies"),
            asked("crm/contacts"),
            asked("crm/conversations")
        ),
        (1, 2, 2)
    );
    let deleted: BTreeSet<String> = env
        .rows("SELECT conversation_id FROM crm.conversations WHERE deleted_at IS NOT NULL")
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(
        deleted,
        [mine].into_iter().collect(),
        "only the configured companies' rows can be marked"
    );
    assert_eq!(
        env.int("SELECT COUNT(*) FROM crm.companies WHERE deleted_at IS NOT NULL")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_clear_and_faults_still_end_exact() {
    let env = crm_env(
        crm_data(6),
        SiData::new(d("2025-10-25"), d("2025-10-25"), 0),
        "",
        false,
    )
    .await;
    // Wrong key: 401 at once, the API's words, no key in the message.
    let wrong = "crm-WRONG-key-0001";
    std::fs::write(&env.pipeline_file, crm_pipeline(&env.sim, wrong, "", false)).unwrap();
    let bad = Pipeline::load(&env.pipeline_file).unwrap();
    let report = run_once(
        &bad,
        &env.wh,
        &RunOptions {
            now: Some(now()),
            ..RunOptions::default()
        },
    )
    .await
    .unwrap();
    let err = report.streams[0].error.clone().unwrap();
    assert!(
        err.contains("401")
            && err.contains("Invalid or missing API key")
            && err.contains("crm.companies"),
        "{err}"
    );
    assert!(!err.contains(wrong));
    assert_eq!(env.sim.requests()["crm/companies"], 1, "401 is not retried");
    // Wrong path: 404 names the endpoint.
    std::fs::write(
        &env.pipeline_file,
        crm_pipeline(&env.sim, KEY, "", false).replace("/crm/api/v1", "/crm/api/v2"),
    )
    .unwrap();
    let bad = Pipeline::load(&env.pipeline_file).unwrap();
    let report = run_once(
        &bad,
        &env.wh,
        &RunOptions {
            now: Some(now()),
            ..RunOptions::default()
        },
    )
    .await
    .unwrap();
    let err = report.streams[0].error.clone().unwrap();
    assert!(err.contains("404") && err.contains("/companies"), "{err}");
    // 500s, 429s and cut-off bodies are retried; the result is exact.
    env.sim.set_faults(Faults {
        rate_429: 0.2,
        rate_500: 0.2,
        truncate_rate: 0.2,
        ..Faults::default()
    });
    let report = run_at(&env, now()).await;
    assert!(env.sim.faults_injected() > 0);
    assert_eq!(
        report
            .streams
            .iter()
            .map(|s| s.traffic.retries)
            .sum::<u64>(),
        env.sim.faults_injected()
    );
    assert_crm_exact(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_record_is_quarantined_and_never_marked_deleted() {
    let env = crm_env(
        crm_data(10),
        SiData::new(d("2025-10-25"), d("2025-10-25"), 0),
        "",
        false,
    )
    .await;
    run_at(&env, now()).await;
    // Some stored conversations now come without createdAt.
    env.sim.update(|c| c.crm.malformed_every = 4);
    let report = run_at(&env, now() + Duration::hours(1)).await;
    let malformed: BTreeSet<String> = env
        .sim
        .config()
        .crm
        .conversations()
        .iter()
        .filter(|c| c.malformed)
        .map(|c| c.id.clone())
        .collect();
    assert!(malformed.len() >= 10);
    let rejects = env
        .rows("SELECT table_name, reason, raw_json FROM meta.rejects")
        .await;
    assert_eq!(rejects.len(), malformed.len());
    assert!(rejects
        .iter()
        .all(|r| r[0] == "crm.conversations" && r[1].contains("createdAt")));
    let conv = report
        .streams
        .iter()
        .find(|s| s.stream == "crm.conversations")
        .unwrap();
    assert_eq!(
        (conv.rejects, conv.rows_written),
        (malformed.len() as u64, 0)
    );
    // They exist at the source, so their stored rows stay live.
    assert_eq!(
        env.int("SELECT COUNT(*) FROM crm.conversations WHERE deleted_at IS NOT NULL")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn company_views_equal_figures_computed_from_the_simulator() {
    let si = SiData::new(d("2025-10-27"), d("2025-11-04"), 12);
    let env = crm_env(crm_data(10), si, "", true).await;
    run_at(&env, now()).await;
    let cfg = env.sim.config();
    let companies: BTreeMap<String, (String, bool)> = cfg
        .crm
        .companies()
        .iter()
        .map(|c| (c.id.clone(), (c.name.clone(), c.is_customer)))
        .collect();
    let convs = cfg.crm.conversations();
    // reporting.company_conversations
    let mut expected: BTreeMap<(String, String), (i64, i64, i64)> = BTreeMap::new();
    for c in &convs {
        let e = expected
            .entry((local(c.created), c.company_id.clone()))
            .or_default();
        e.0 += 1;
        e.1 += (c.status == "open") as i64;
        e.2 += (!c.is_read) as i64;
    }
    let got = env.rows("SELECT CAST(dt AS VARCHAR), company_id, company_name, conversations, open_conversations, unread_conversations FROM reporting.company_conversations").await;
    let got: BTreeMap<(String, String), (i64, i64, i64)> = got
        .into_iter()
        .map(|r| {
            let company = if r[1] == "NULL" {
                String::new()
            } else {
                r[1].clone()
            };
            if let Some((name, _)) = companies.get(&company) {
                assert_eq!(&r[2], name);
            }
            (
                (r[0].clone(), company),
                (
                    r[3].parse().unwrap(),
                    r[4].parse().unwrap(),
                    r[5].parse().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got, expected);
    // reporting.chats_by_company: email -> company through contacts, lower-cased.
    let mut email_company: BTreeMap<String, String> = BTreeMap::new();
    for c in cfg.crm.contacts() {
        let e = email_company
            .entry(c.email.to_lowercase())
            .or_insert(c.company_id.clone());
        if c.company_id < *e {
            *e = c.company_id.clone();
        }
    }
    let mut expected: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    let (a, b) = chatlake::simulator::clock::local_range(
        d("2025-10-25"),
        now().with_timezone(&TZ).date_naive(),
        TZ,
    );
    let si_chats = cfg.socialintents.chats_in(a, b);
    let chats = si_chats
        .iter()
        .map(|c| {
            (
                local(c.start),
                c.visitor_email.to_lowercase(),
                c.chat_type == "Missed",
            )
        })
        .chain(convs.iter().map(|c| {
            (
                local(c.created),
                c.visitor_email.to_lowercase(),
                c.assigned_to.is_none(),
            )
        }));
    for (dt, email, missed) in chats {
        if let Some(company) = email_company.get(&email) {
            let e = expected.entry((dt, company.clone())).or_default();
            e.0 += 1;
            e.1 += missed as i64;
        }
    }
    let si_matched = si_chats
        .iter()
        .filter(|c| email_company.contains_key(&c.visitor_email.to_lowercase()))
        .count();
    assert!(
        si_matched > 20,
        "Social Intents chats joined through contacts: {si_matched}"
    );
    let got = env.rows("SELECT CAST(dt AS VARCHAR), company_id, chats, missed_chats, missed_rate FROM reporting.chats_by_company").await;
    let got: BTreeMap<(String, String), (i64, i64)> = got
        .into_iter()
        .map(|r| {
            let (n, m): (i64, i64) = (r[2].parse().unwrap(), r[3].parse().unwrap());
            assert!((r[4].parse::<f64>().unwrap() - m as f64 / n as f64).abs() < 1e-12);
            ((r[0].clone(), r[1].clone()), (n, m))
        })
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn killed_mid_run_then_rerun_ends_exact() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut data = crm_data(40);
    data.now = None; // the binary runs on the wall clock; all the data is in the past
    let env = rt.block_on(crm_env(
        data,
        SiData::new(d("2025-10-25"), d("2025-10-25"), 0),
        "",
        false,
    ));
    rt.block_on(run_at(&env, now()));
    // Edits and deletions everywhere, then runs killed while they merge them.
    env.sim.update(|c| {
        for conv in c.crm.conversations().iter().step_by(3) {
            c.crm
                .edits
                .insert(conv.id.clone(), now() + Duration::hours(1));
        }
        let gone: Vec<String> = c
            .crm
            .conversations()
            .iter()
            .skip(1)
            .step_by(7)
            .map(|c| c.id.clone())
            .collect();
        c.crm.deleted.extend(gone);
    });
    env.sim.set_faults(Faults {
        latency_ms: 150,
        ..Faults::default()
    });
    let kills = kill_runs_after(&env, &[], &[120, 300, 470, 490, 510]);
    assert!(kills >= 2, "the runs finished before they could be killed");
    env.sim.set_faults(Faults::default());
    assert!(spawn_run(&env, &[]).wait().unwrap().success());
    rt.block_on(assert_crm_exact(&env));
    let deleted = env.sim.config().crm.deleted.len() as i64;
    let marked =
        rt.block_on(env.int("SELECT COUNT(*) FROM crm.conversations WHERE deleted_at IS NOT NULL"));
    assert_eq!(marked, deleted);
}
