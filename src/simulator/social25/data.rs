//! The simulator's Social25 tenant, deterministic from its seed: agents,
//! conversations in five states with their messages, failed syncs, and the
//! JSON each renders as (naive UTC times, Django-style durations).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use serde_json::{json, Value};

use super::{DEMO_TENANT_ID, DEMO_TOKEN};

/// Agents of the tenant: (id, username, first name, last name).
pub const AGENTS: &[(&str, &str, &str, &str)] = &[
    (
        "4b550eaa-24d8-4632-b7d0-988a6e268a01",
        "sofia.b",
        "Sofia",
        "Berg",
    ),
    (
        "4b550eaa-24d8-4632-b7d0-988a6e268a02",
        "omar.k",
        "Omar",
        "Khan",
    ),
    (
        "4b550eaa-24d8-4632-b7d0-988a6e268a03",
        "lena.v",
        "Lena",
        "Visser",
    ),
    (
        "4b550eaa-24d8-4632-b7d0-988a6e268a04",
        "tariq.m",
        "Tariq",
        "Mensah",
    ),
    (
        "4b550eaa-24d8-4632-b7d0-988a6e268a05",
        "bot",
        "Welcome",
        "Bot",
    ),
];

pub(super) const PLATFORMS: &[(&str, &str)] = &[
    ("facebook", "Acme on Facebook"),
    ("whatsapp", "Acme WhatsApp"),
    ("telegram", "Acme Telegram"),
    ("messagebird", "Acme Line"),
];

/// Reasons a message did not sync to Salesforce.
pub const FAILURES: &[&str] = &[
    "INVALID_LOGIN: Invalid username, password, security token; or user locked out.",
    "REQUEST_LIMIT_EXCEEDED: TotalRequests Limit exceeded.",
    "FIELD_CUSTOM_VALIDATION_EXCEPTION: Phone is required",
];

/// How `next` misbehaves (fault injection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadNext {
    /// `next` points at the page just served.
    Repeat,
    /// `next` points at another host.
    ForeignHost,
}

/// The Social25 tenant the simulator serves.
#[derive(Debug, Clone)]
pub struct S25Data {
    pub seed: u64,
    pub tenant_id: String,
    pub token: String,
    /// First and last UTC day with new conversations.
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    /// On average, with `rhythm`; exactly, without.
    pub conversations_per_day: u32,
    /// The demo tenant's shape (office hours, trend, noise, more missed out
    /// of hours, agents of different speeds); None: spread evenly.
    pub rhythm: Option<crate::simulator::rhythm::Rhythm>,
    /// Results per page of every listing.
    pub page_size: usize,
    /// The simulator's clock: nothing later exists, and failed syncs are
    /// served only once 15 minutes old. None: the wall clock.
    pub now: Option<DateTime<Utc>>,
    /// Every Nth message (by id hash) is served with a broken timestamp; 0: none.
    pub malformed_every: u64,
    /// Messages added to conversations after the fact: id -> how many, ten
    /// minutes apart, after the conversation's last message and after
    /// `appended_after` (new messages carry fresh timestamps).
    pub appended: BTreeMap<String, u32>,
    pub appended_after: Option<DateTime<Utc>>,
    /// Fault: a misbehaving `next`.
    pub bad_next: Option<BadNext>,
    /// Fault: `count` claims this many more rows than the listing has.
    pub count_skew: u64,
}

/// One conversation.
#[derive(Debug, Clone)]
pub struct S25Conversation {
    pub id: String,
    pub state: &'static str,
    pub created: DateTime<Utc>,
    pub agent_id: Option<String>,
    pub user_id: String,
    pub user_first_name: String,
    /// The user's phone as the platform has it (WhatsApp users have one).
    pub user_phone: Option<String>,
    pub platform_source: &'static str,
    pub platform_name: &'static str,
    pub tags: Vec<String>,
    /// Messages that exist now, in time order.
    pub messages: Vec<S25Message>,
}

/// One message.
#[derive(Debug, Clone)]
pub struct S25Message {
    pub id: String,
    pub conversation_id: String,
    pub agent_id: Option<String>,
    pub at: DateTime<Utc>,
    pub modified: DateTime<Utc>,
    pub outbound: bool,
    pub kind: &'static str,
    pub text: String,
    /// Why it failed to sync, if it did.
    pub failure: Option<&'static str>,
    /// Served with an unparseable timestamp.
    pub malformed: bool,
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

pub(super) fn uuid(a: u64, b: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a as u32,
        (b >> 48) as u16,
        b & 0xfff,
        (b >> 12) & 0xfff,
        mix(a ^ b) & 0xffff_ffff_ffff
    )
}

pub(super) fn hash_str(s: &str) -> u64 {
    mix(s
        .bytes()
        .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64)))
}

/// The account of [`super::SimConfig::default`]: its agents, no conversations.
impl Default for S25Data {
    fn default() -> Self {
        Self::new(crate::simulator::QUIET_DAY, crate::simulator::QUIET_DAY, 0)
    }
}

impl S25Data {
    /// A small tenant for tests and the demo.
    pub fn new(first_day: NaiveDate, last_day: NaiveDate, conversations_per_day: u32) -> Self {
        S25Data {
            seed: 25,
            tenant_id: DEMO_TENANT_ID.into(),
            token: DEMO_TOKEN.into(),
            first_day,
            last_day,
            conversations_per_day,
            rhythm: None,
            page_size: 100,
            now: None,
            malformed_every: 0,
            appended: BTreeMap::new(),
            appended_after: None,
            bad_next: None,
            count_skew: 0,
        }
    }

    /// The simulator's "now".
    pub fn now(&self) -> DateTime<Utc> {
        self.now.unwrap_or_else(Utc::now)
    }

    /// A conversation id names its UTC day and index, so it can be regenerated.
    fn conversation_id(&self, day: NaiveDate, i: u32) -> String {
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            day.to_epoch_days(),
            i,
            self.seed & 0xfff,
            i & 0xfff,
            mix(self.seed ^ day.to_epoch_days() as u64 ^ (i as u64) << 32) & 0xffff_ffff_ffff
        )
    }

    /// Every conversation that exists now, oldest first.
    pub fn conversations(&self) -> Vec<S25Conversation> {
        self.conversations_at(self.now())
    }

    /// Every conversation that exists at `now`, oldest first.
    pub fn conversations_at(&self, now: DateTime<Utc>) -> Vec<S25Conversation> {
        let last = self.last_day.min(now.date_naive());
        self.first_day
            .iter_days()
            .take_while(|d| *d <= last)
            .flat_map(|d| (0..self.candidates_per_day()).map(move |i| (d, i)))
            .filter_map(|(d, i)| self.conversation(d, i, now))
            .collect()
    }

    /// One conversation by id (None: unknown or not created yet).
    pub fn find(&self, id: &str) -> Option<S25Conversation> {
        let mut parts = id.split('-');
        let day = i64::from_str_radix(parts.next()?, 16).ok()?;
        let i = u32::from_str_radix(parts.next()?, 16).ok()?;
        let day = NaiveDate::from_epoch_days(day as i32)?;
        if day < self.first_day
            || day > self.last_day
            || i >= self.candidates_per_day()
            || self.conversation_id(day, i) != id
        {
            return None;
        }
        self.conversation(day, i, self.now())
    }

    /// Conversation indexes tried per UTC day: with a rhythm, some are not
    /// kept (see `rhythm`).
    fn candidates_per_day(&self) -> u32 {
        match self.rhythm {
            Some(_) => self.conversations_per_day * crate::simulator::rhythm::CANDIDATES,
            None => self.conversations_per_day,
        }
    }

    fn conversation(&self, day: NaiveDate, i: u32, now: DateTime<Utc>) -> Option<S25Conversation> {
        let id = self.conversation_id(day, i);
        let mut rng = fastrand::Rng::with_seed(mix(self.seed ^ hash_str(&id)));
        let created = day.and_time(NaiveTime::MIN).and_utc()
            + Duration::microseconds(rng.i64(0..86_400_000_000));
        if created > now {
            return None;
        }
        // With a rhythm: kept by the hour's weight, fewer missed in office
        // hours, and each agent's own reply speed.
        let (missed_percent, speed) = match &self.rhythm {
            Some(r) if rng.f64() >= r.keep(created) => return None,
            Some(r) => (r.missed_percent(created, 7, 30), None),
            None => (15, Some(1.0)),
        };
        let state = [
            "OPEN", "OPEN", "CLOSED", "CLOSED", "CLOSED", "AUTO_BOT", "EXPIRED", "BLOCKED",
        ][rng.usize(..8)];
        let (platform_source, platform_name) = PLATFORMS[rng.usize(..PLATFORMS.len())];
        let agent_no = rng.usize(..4);
        let agent = AGENTS[agent_no].0.to_string();
        // Reply delays scale with the agent's speed (1.0: the even spread).
        let speed = speed.unwrap_or([0.15, 0.3, 0.6, 1.2][agent_no]);
        let reply = |rng: &mut fastrand::Rng, us: std::ops::Range<i64>| {
            Duration::microseconds((rng.i64(us) as f64 * speed) as i64)
        };
        let roll = rng.u32(0..100);
        // Missed takes the first `missed_percent` of the roll.
        let roll = if roll < missed_percent {
            roll * 15 / missed_percent.max(1)
        } else {
            15 + (roll - missed_percent) * 85 / (100 - missed_percent).max(1)
        };
        let mut msgs: Vec<(bool, Duration, &'static str, &str)> = Vec::new(); // (outbound, gap, type, text)
        let mut assigned = true;
        if roll < 15 {
            // Missed: the customer writes, nobody answers.
            assigned = false;
            msgs.push((
                false,
                Duration::zero(),
                "TEXT",
                "Hello? I need help with my order",
            ));
            if rng.bool() {
                msgs.push((
                    false,
                    Duration::seconds(rng.i64(30..900)),
                    "TEXT",
                    "Is anyone there?",
                ));
            }
        } else if roll < 20 {
            assigned = false; // opened, never written in
        } else if roll < 30 {
            // Business-initiated: a template goes out first, the customer replies, an agent answers.
            msgs.push((
                true,
                Duration::zero(),
                "MEDIA_HSM",
                "Your order has shipped",
            ));
            msgs.push((
                false,
                Duration::seconds(rng.i64(60..7_200)),
                "TEXT",
                "Thanks, when will it arrive?",
            ));
            msgs.push((
                true,
                reply(&mut rng, 5_000_000..1_800_000_000),
                "TEXT",
                "Tomorrow before noon.",
            ));
        } else {
            msgs.push((false, Duration::zero(), "TEXT", "Hi, I have a question"));
            msgs.push((
                true,
                reply(&mut rng, 3_000_000..1_200_000_000),
                "TEXT",
                "Hi! Happy to help.",
            ));
            for k in 0..rng.u32(0..4) {
                msgs.push((
                    k % 2 == 0,
                    Duration::seconds(rng.i64(10..600)),
                    "TEXT",
                    "...",
                ));
            }
        }
        let extra = self.appended.get(&id).copied().unwrap_or(0);
        for k in 0..extra {
            msgs.push((
                k % 2 == 1,
                Duration::minutes(10),
                "TEXT",
                if k % 2 == 1 {
                    "Anything else?"
                } else {
                    "One more thing"
                },
            ));
        }
        let mut at = created + Duration::microseconds(rng.i64(500_000..5_000_000));
        let mut messages = Vec::new();
        let regular = msgs.len() - extra as usize;
        for (k, (outbound, gap, kind, text)) in msgs.into_iter().enumerate() {
            at += gap;
            if k == regular {
                at = at.max(self.appended_after.unwrap_or(at));
            }
            if at > now {
                break;
            }
            let mid = uuid(hash_str(&id), mix(k as u64 ^ self.seed));
            let h = hash_str(&mid);
            // Every other message has whole seconds: the API writes both forms.
            let at_k = if k % 2 == 1 {
                DateTime::from_timestamp(at.timestamp(), 0).expect("valid")
            } else {
                at
            };
            messages.push(S25Message {
                conversation_id: id.clone(),
                agent_id: outbound.then(|| {
                    if kind == "MEDIA_HSM" {
                        AGENTS[4].0.to_string()
                    } else {
                        agent.clone()
                    }
                }),
                at: at_k,
                modified: at_k + Duration::milliseconds(1_250),
                outbound,
                kind,
                text: text.to_string(),
                failure: (h % 9 == 0).then(|| FAILURES[(h / 9 % FAILURES.len() as u64) as usize]),
                malformed: self.malformed_every > 0 && h % self.malformed_every == 1,
                id: mid,
            });
        }
        Some(S25Conversation {
            state,
            created,
            agent_id: assigned.then_some(agent),
            user_id: uuid(hash_str(&id), 7),
            user_first_name: ["Alen", "Bo", "Chiara", "Dmitri", "Eve"][rng.usize(..5)].to_string(),
            // Personal data as it comes (not from `rng`: the rest stays as it was).
            user_phone: (hash_str(&id) % 2 == 0)
                .then(|| crate::simulator::data::phone(hash_str(&id) / 2 % 10_000)),
            platform_source,
            platform_name,
            tags: if rng.u32(0..4) == 0 {
                vec!["vip".to_string()]
            } else {
                Vec::new()
            },
            messages,
            id,
        })
    }

    /// Failed syncs with `from <= timestamp < till`, oldest first.
    pub fn failed_in(&self, from: DateTime<Utc>, till: DateTime<Utc>) -> Vec<S25Message> {
        let now = self.now();
        let first = (from - Duration::days(2)).date_naive().max(self.first_day);
        let last = till.date_naive().min(self.last_day);
        let mut out: Vec<S25Message> = first
            .iter_days()
            .take_while(|d| *d <= last)
            .flat_map(|d| {
                (0..self.candidates_per_day()).filter_map(move |i| self.conversation(d, i, now))
            })
            .flat_map(|c| c.messages)
            .filter(|m| {
                m.failure.is_some()
                    && m.at >= from
                    && m.at < till
                    && m.at <= now - Duration::minutes(15)
            })
            .collect();
        out.sort_by(|a, b| a.at.cmp(&b.at).then(a.id.cmp(&b.id)));
        out
    }
}

/// Naive ISO as the API writes it: microseconds only when there are some.
pub fn naive(t: DateTime<Utc>) -> String {
    if t.timestamp_subsec_micros() == 0 {
        t.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    }
}

/// A Django duration string: "116 05:19:39.788243".
pub fn django_duration(d: Duration) -> String {
    let micros = d.num_microseconds().unwrap_or(0);
    let days = micros.div_euclid(86_400_000_000);
    let rest = micros.rem_euclid(86_400_000_000);
    let (h, m, s, us) = (
        rest / 3_600_000_000,
        rest / 60_000_000 % 60,
        rest / 1_000_000 % 60,
        rest % 1_000_000,
    );
    let clock = if us == 0 {
        format!("{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}.{us:06}")
    };
    if days == 0 {
        clock
    } else {
        format!("{days} {clock}")
    }
}

/// The JSON of a message (failed syncs add their fields).
pub fn message_json(m: &S25Message) -> Value {
    json!({
        "id": m.id,
        "agent_id": m.agent_id,
        "conversation_id": m.conversation_id,
        "timestamp": if m.malformed { "2025-02-30T25:61:00".to_string() } else { naive(m.at) },
        "modified_timestamp": naive(m.modified),
        "type": m.kind,
        "status": if m.outbound { "READ" } else { "RECEIVED" },
        "outbound": m.outbound,
        "text": m.text,
        "auxiliary_data": if m.kind == "MEDIA_HSM" { Value::String("{'template': 'order_shipped'}".into()) } else { Value::Null },
        "file": null,
        "file_type": null,
        "media_title": null,
        "mime_type": null,
    })
}

/// The JSON of a conversation at `now`.
pub fn conversation_json(c: &S25Conversation, now: DateTime<Utc>) -> Value {
    json!({
        "id": c.id,
        "flow": "SERVICE",
        "state": c.state,
        "created": naive(c.created),
        "agent_id": c.agent_id,
        "user": {"id": c.user_id, "username": "", "first_name": c.user_first_name, "last_name": "D.",
                 "phone_number": c.user_phone, "gender": "unknown", "profile_picture": null},
        "platform": {"source": c.platform_source, "name": c.platform_name, "supports_media_captions": false},
        "comments": null,
        "tags": c.tags,
        "last_message": c.messages.last().map(message_json),
        "has_expired": django_duration(now - c.created),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_regenerate_and_durations_render_like_django() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let mut data = S25Data::new(d("2025-03-01"), d("2025-03-03"), 10);
        data.now = Some(d("2025-03-10").and_hms_opt(0, 0, 0).unwrap().and_utc());
        let all = data.conversations();
        assert_eq!(all.len(), 30);
        for c in &all {
            let again = data.find(&c.id).unwrap();
            assert_eq!(
                (again.created, again.messages.len()),
                (c.created, c.messages.len())
            );
        }
        assert!(data.find("nonsense").is_none());
        assert_eq!(
            django_duration(Duration::microseconds(
                ((116 * 86_400 + 5 * 3600 + 19 * 60 + 39) * 1_000_000) + 788_243
            )),
            "116 05:19:39.788243"
        );
        assert_eq!(django_duration(Duration::seconds(61)), "00:01:01");
    }
}
