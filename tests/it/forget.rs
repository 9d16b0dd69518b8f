//! Issue 20: `chatlake forget` erases a person from every table, keeps
//! every other row as it was, records the erasure with hashes only, and
//! keeps the person out of later runs (lookback and `--full-refresh`);
//! a `forget` killed half-way is finished by running it again. What is the
//! person's is computed here, in SQL over the warehouse as it was before,
//! not by chatlake's matcher.

use std::collections::BTreeMap;

use crate::privacy::{hmac_hex, pipeline, sim_config, PKEY, POLICY};
use crate::support::*;

/// The data as it is kept: plain text, so the bytes can be searched.
const KEEP: &str = r#"
[privacy]
key = "privacy-key-0123456789abcdef"
email = "keep"
phone = "keep"
free_text = "keep"
"#;

/// The tables the person's rows are in, and the rows that are theirs:
/// (table, SQL predicate, ORDER BY).
fn theirs(emails: &[String], phone: &str) -> Vec<(&'static str, String)> {
    let list = |col: &str| {
        emails
            .iter()
            .map(|e| format!("lower({col}) = '{}'", e.to_lowercase()))
            .collect::<Vec<_>>()
            .join(" OR ")
    };
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    let phone_is =
        |col: &str| format!("regexp_replace(coalesce({col}, ''), '[^0-9]', '', 'g') = '{digits}'");
    let chats = format!("{} OR {}", list("visitor_email"), phone_is("visitor_phone"));
    let in_text = |col: &str| {
        emails
            .iter()
            .map(|e| format!("lower(coalesce({col}, '')) LIKE '%{}%'", e.to_lowercase()))
            .chain([format!("coalesce({col}, '') LIKE '%{phone}%'")])
            .collect::<Vec<_>>()
            .join(" OR ")
    };
    let raw = in_text("raw_json");
    vec![
        ("socialintents.chats", chats.clone()),
        (
            "socialintents.chat_messages",
            format!("chat_id IN (SELECT chat_id FROM socialintents.chats WHERE {chats})"),
        ),
        ("socialintents.offline_messages", chats.clone()),
        (
            "socialintents.contacts",
            format!("{} OR {}", list("email"), phone_is("phone")),
        ),
        (
            "crm.contacts",
            format!("{} OR {}", list("email"), phone_is("phone")),
        ),
        ("crm.conversations", list("visitor_email")),
        ("meta.rejects", raw.clone()),
        (
            "meta.alerts",
            format!("{} OR {}", in_text("alert_key"), in_text("detail")),
        ),
        ("meta.deliveries", in_text("subject")),
    ]
}

/// Every row of `table` as text, sorted.
async fn all_rows(env: &Env, table: &str, filter: &str) -> Vec<Vec<String>> {
    let mut rows = env
        .rows(&format!("SELECT * FROM {table} WHERE {filter}"))
        .await;
    rows.sort();
    rows
}

fn snapshot(dir: &std::path::Path) -> BTreeMap<std::path::PathBuf, Vec<u8>> {
    files(dir)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
        .collect()
}

fn forget(file: &str, wh: &str, who: &[&str], extra: &[(&str, &str)]) -> (i32, String, String) {
    let args = [
        &["forget", "--pipeline", file, "--warehouse", wh][..],
        who,
        &["--requested-by", "ticket 4711 from dpo@example.net"],
    ]
    .concat();
    chatlake_env(&args, extra)
}

/// `chatlake run` over the test's dates, which must succeed; its output.
fn run(file: &str, wh: &str, extra: &[&str]) -> String {
    let (code, out) = crate::privacy::run(file, wh, extra, None);
    assert_eq!(code, 0, "{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_erases_a_person_everywhere_and_keeps_them_out() {
    let env = env_from(sim_config(), "p.toml", |sim| pipeline(sim, KEEP)).await;
    let file = env.pipeline_file.to_str().unwrap().to_string();
    let wh = env.dir.path().join("wh");
    let wh_s = wh.to_str().unwrap().to_string();

    // The person: a visitor known to the CRM, with a chat (email in mixed
    // case where the simulator types it so); and, in the same request, the
    // email of a visitor whose only chat was malformed (in meta.rejects).
    let served = env.served_chats("2025-10-27", "2025-11-04");
    let talked: Vec<String> = env
        .sim
        .config()
        .crm
        .conversations()
        .iter()
        .map(|c| c.visitor_email.to_lowercase())
        .collect();
    let person = served
        .iter()
        .find(|c| {
            !c.malformed
                && talked.contains(&c.visitor_email.to_lowercase())
                && c.visitor_phone.starts_with('+')
        })
        .expect("a visitor known to the CRM")
        .clone();
    let poison = served
        .iter()
        .find(|c| c.malformed && c.visitor_email != person.visitor_email)
        .expect("a malformed chat")
        .clone();
    // An alert rule keyed by the person's email, sent to a webhook that
    // fails once, then takes it: meta.alerts, meta.deliveries and the alert
    // state (firing) name them.
    let hook = crate::notify::receiver().await;
    hook.fail_next.store(1, std::sync::atomic::Ordering::SeqCst);
    let rule = format!(
        "\n[channels.hook]\ntype = \"webhook\"\nurl = \"{}/hook\"\n\n\
         [[alerts]]\nname = \"visitor watch\"\n\
         sql = \"SELECT visitor_email, visitor_phone, count(*) AS chats FROM socialintents.chats \
         WHERE lower(visitor_email) = '{}' GROUP BY visitor_email, visitor_phone\"\n\
         key = [\"visitor_email\"]\nnotify = [\"hook\"]\n",
        hook.url,
        person.visitor_email.to_lowercase()
    );
    let text = std::fs::read_to_string(&file).unwrap() + &rule;
    std::fs::write(&file, text).unwrap();
    run(&file, &wh_s, &[]);
    let state = wh.join("_state/p/_alerts.json");
    let firing = std::fs::read_to_string(&state).unwrap_or_default();
    assert!(
        firing
            .to_lowercase()
            .contains(&person.visitor_email.to_lowercase()),
        "the alert is not firing: {firing}"
    );

    let emails = vec![person.visitor_email.clone(), poison.visitor_email.clone()];
    let phone = person.visitor_phone.clone();
    let tables = theirs(&emails, &phone);
    let mut gone = BTreeMap::new();
    let mut left = BTreeMap::new();
    for (t, pred) in &tables {
        let n = env
            .int(&format!("SELECT count(*) FROM {t} WHERE {pred}"))
            .await;
        gone.insert(*t, n);
        left.insert(
            *t,
            all_rows(&env, t, &format!("NOT coalesce({pred}, false)")).await,
        );
    }
    for t in [
        "socialintents.chats",
        "socialintents.chat_messages",
        "crm.contacts",
        "crm.conversations",
        "meta.rejects",
        "meta.alerts",
        "meta.deliveries",
    ] {
        assert!(gone[t] > 0, "the person has no row in {t}: {gone:?}");
    }
    let upper = person.visitor_email.to_uppercase();
    let who = [
        "--email",
        upper.as_str(),
        "--phone",
        phone.as_str(),
        "--email",
        poison.visitor_email.as_str(),
    ];
    let line = |out: &str, t: &str| -> Option<i64> {
        out.lines()
            .find(|l| l.trim_start().starts_with(&format!("{t} ")))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
    };

    // The dry run: the counts, and not a byte changed.
    let before = snapshot(&wh);
    let (code, out, err) = forget(&file, &wh_s, &[&who[..], &["--dry-run"]].concat(), &[]);
    assert_eq!(code, 0, "{out}{err}");
    for (t, n) in &gone {
        assert_eq!(line(&out, t), Some(*n), "{t} in\n{out}");
    }
    assert!(snapshot(&wh) == before, "the dry run changed the warehouse");

    // Killed after its first file (as kill -9 would), then run again.
    let (code, out, err) = forget(
        &file,
        &wh_s,
        &who,
        &[("CHATLAKE_FAILPOINT", "forget@file-1")],
    );
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("failpoint forget@file-1"), "{err}");
    let (code, out, err) = forget(&file, &wh_s, &who, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(", resumed"), "{out}");
    for (t, n) in &gone {
        assert_eq!(line(&out, t), Some(*n), "{t} in\n{out}");
    }
    for v in [&person.visitor_email, &upper, &phone, &poison.visitor_email] {
        assert!(
            !out.contains(v.as_str()) && !err.contains(v.as_str()),
            "{v} printed"
        );
    }

    // Every other row is as it was; none of theirs is left.
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    let probes = vec![
        person.visitor_email.to_lowercase(),
        poison.visitor_email.to_lowercase(),
        phone.clone(),
        digits,
    ];
    let check = |label: &'static str| check(&env, &tables, &left, &probes, label);
    check("forget").await;

    // The record: hashes, never the identifiers; one row per table searched.
    let record = env
        .rows("SELECT erasure_id, table_name, rows, requested_by, array_to_string(identifiers, ' ') FROM meta.erasures ORDER BY table_name")
        .await;
    let ids: std::collections::BTreeSet<&String> = record.iter().map(|r| &r[0]).collect();
    assert_eq!(ids.len(), 1, "{record:?}");
    for (t, n) in &gone {
        let r = record.iter().find(|r| r[1] == *t).expect(t);
        assert_eq!(r[2], n.to_string(), "{t}");
    }
    let r = &record[0];
    assert!(
        !r[3].contains("dpo@example.net") && r[3].contains("ticket 4711"),
        "{r:?}"
    );
    let h = hmac_hex(&person.visitor_email.to_lowercase());
    assert!(r[4].contains(&format!("email:{h}")), "{r:?}");
    let phone_norm = format!(
        "+{}",
        phone
            .chars()
            .filter(char::is_ascii_digit)
            .collect::<String>()
    );
    assert!(
        r[4].contains(&format!("phone:{}", hmac_hex(&phone_norm))),
        "{r:?}"
    );
    for v in [&person.visitor_email.to_lowercase(), &phone] {
        assert!(!r[4].contains(v.as_str()), "{r:?}");
    }

    // The API still sends them: a run over the same days (its lookback
    // too) and a --full-refresh leave them out, and count them.
    let out = run(&file, &wh_s, &[]);
    assert!(
        out.contains("`chatlake forget` erased were left out"),
        "{out}"
    );
    check("a re-run").await;
    let suppressed = env
        .int("SELECT sum(suppressed) FROM meta.runs WHERE run_id = (SELECT max(run_id) FROM meta.runs)")
        .await;
    assert!(
        suppressed >= gone["socialintents.chats"] + gone["socialintents.chat_messages"],
        "{suppressed} {gone:?}\n{out}"
    );
    run(&file, &wh_s, &["--full-refresh"]);
    check("a full refresh").await;

    // Without the key the list cannot be checked: the run is refused.
    let no_key = env.dir.path().join("nokey.toml");
    std::fs::write(&no_key, pipeline(&env.sim, "")).unwrap();
    let (code, out, err) = chatlake(&[
        "run",
        "--pipeline",
        no_key.to_str().unwrap(),
        "--warehouse",
        &wh_s,
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("suppression list"), "{err}");
}

/// With the identifying columns hashed, `forget` finds the person by the
/// hash of what it is given; a dropped column is named as not searched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_finds_hashed_identifiers_and_names_dropped_ones() {
    let policy = format!(
        "{POLICY}[privacy.columns]\n\"socialintents.offline_messages.visitor_email\" = \"drop\"\n"
    );
    let env = env_from(sim_config(), "p.toml", |sim| pipeline(sim, &policy)).await;
    let file = env.pipeline_file.to_str().unwrap().to_string();
    let wh_s = env.dir.path().join("wh").to_str().unwrap().to_string();
    run(&file, &wh_s, &[]);
    let person = env
        .served_chats("2025-10-27", "2025-11-04")
        .into_iter()
        .find(|c| !c.malformed)
        .unwrap();
    let h = hmac_hex(&person.visitor_email.to_lowercase());
    let chats = env
        .int(&format!(
            "SELECT count(*) FROM socialintents.chats WHERE visitor_email = '{h}'"
        ))
        .await;
    let messages = env
        .int(&format!("SELECT count(*) FROM socialintents.chat_messages WHERE chat_id IN (SELECT chat_id FROM socialintents.chats WHERE visitor_email = '{h}')"))
        .await;
    assert!(chats > 0 && messages > 0);
    let all_chats = env.int("SELECT count(*) FROM socialintents.chats").await;
    let (code, out, err) = forget(&file, &wh_s, &["--email", &person.visitor_email], &[]);
    assert_eq!(code, 0, "{out}{err}");

    assert!(
        out.contains("could not search by socialintents.offline_messages.visitor_email"),
        "{out}"
    );
    assert!(!out.contains(PKEY) && !err.contains(PKEY));
    assert_eq!(
        env.int(&format!(
            "SELECT count(*) FROM socialintents.chats WHERE visitor_email = '{h}'"
        ))
        .await,
        0
    );
    assert_eq!(
        env.int("SELECT count(*) FROM socialintents.chats").await,
        all_chats - chats
    );
    let erased = env
        .int("SELECT rows FROM meta.erasures WHERE table_name = 'socialintents.chat_messages'")
        .await;
    assert_eq!(erased, messages);
}

/// After `label`: no row of the person in any table (by the test's own
/// predicates), every other row as before `forget` (after a run: as many),
/// and none of `probes` in the bytes of any file.
async fn check(
    env: &Env,
    tables: &[(&'static str, String)],
    left: &BTreeMap<&'static str, Vec<Vec<String>>>,
    probes: &[String],
    label: &str,
) {
    for (t, pred) in tables {
        let theirs = env
            .int(&format!("SELECT count(*) FROM {t} WHERE {pred}"))
            .await;
        assert_eq!(theirs, 0, "{label}: {t} still holds the person");
        if label == "forget" {
            let now = all_rows(env, t, "true").await;
            let extra: Vec<_> = now.iter().filter(|r| !left[t].contains(r)).collect();
            let missing: Vec<_> = left[t].iter().filter(|r| !now.contains(r)).collect();
            assert!(
                extra.is_empty() && missing.is_empty(),
                "{label}: {t}: {} rows not there before: {extra:?}; {} rows lost: {missing:?}",
                extra.len(),
                missing.len()
            );
        } else if *t != "meta.rejects" {
            let n = env.int(&format!("SELECT count(*) FROM {t}")).await;
            assert_eq!(n as usize, left[t].len(), "{label}: rows of {t}");
        }
    }
    for f in files(&env.dir.path().join("wh")) {
        let bytes = std::fs::read(&f).unwrap().to_ascii_lowercase();
        for v in probes {
            assert!(
                !bytes.windows(v.len()).any(|w| w == v.as_bytes()),
                "{label}: {v} in {}",
                f.display()
            );
        }
    }
}
