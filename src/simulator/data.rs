//! The simulator's records: a deterministic function of (seed, day), generated
//! on demand, so a history of millions of chats costs no memory, and tests can
//! recompute exactly what was served.

use std::ops::Range;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

use super::clock::local_date;
use super::rhythm::{agent_reply_ms, Rhythm, CANDIDATES};

/// The Social Intents account the simulator serves.
#[derive(Debug, Clone)]
pub struct SiData {
    /// Changes every generated value.
    pub seed: u64,
    /// First and last UTC day with data.
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    /// Regular chats per UTC day (plus the special ones below).
    pub chats_per_day: u32,
    /// The account's home timezone: each local day gets a chat at 23:50 that
    /// crosses midnight, fall-back nights get one in each 01:30, and Fridays
    /// one at 16:50 answered on Monday.
    pub tz: Tz,
    /// Every Nth chat (by id hash) is served with a broken startDate; 0: none.
    pub malformed_every: u64,
    /// Bumped to simulate edits at the source: `visits` grows by it.
    pub revision: u64,
    /// Nothing later than this instant exists yet (the simulator's "now").
    pub until: Option<DateTime<Utc>>,
    /// Schema drift: chats gain a new field (`sentiment`) and `visits`
    /// changes type (served as text like "7 visits").
    pub drift: bool,
    /// The demo account's shape (office hours, trend, noise, missed chats
    /// out of hours, agents of different speeds); None: chats spread evenly
    /// over each UTC day, exactly `chats_per_day` of them (tests, benchmark).
    pub rhythm: Option<Rhythm>,
}

/// Who handled a chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub email: String,
}

/// One message of a chat.
#[derive(Debug, Clone)]
pub struct SimMessage {
    /// messageToAgent (visitor -> agent) or messageToVisitor (agent -> visitor).
    pub kind: &'static str,
    pub nickname: String,
    pub ts_ms: i64,
    pub body: String,
}

/// One chat (or offline message) as the simulator knows it.
#[derive(Debug, Clone)]
pub struct SimChat {
    pub id: String,
    /// Answered, Missed or Offline Message.
    pub chat_type: &'static str,
    pub widget_id: String,
    pub visitor_id: String,
    pub visitor_name: String,
    pub visitor_email: String,
    /// As a visitor types it: spaces, dashes, parentheses, a `+` or not.
    pub visitor_phone: String,
    pub agent: Option<Agent>,
    pub start: DateTime<Utc>,
    pub duration_s: i64,
    pub visits: i64,
    pub messages: Vec<SimMessage>,
    /// Served with a startDate that cannot be parsed.
    pub malformed: bool,
    /// startDate rendered with a true 12-hour hour instead of the usual quirk.
    pub twelve_hour: bool,
}

/// A captured lead.
#[derive(Debug, Clone)]
pub struct SimContact {
    pub id: String,
    pub widget_id: String,
    pub name: String,
    pub email: String,
    pub created: DateTime<Utc>,
}

/// Widgets of the account: (id, name, timezone).
pub const WIDGETS: &[(&str, &str, &str)] = &[
    ("w-sales", "Sales chat", "America/New_York"),
    ("w-support", "Support chat", "America/New_York"),
    ("w-eu", "EU help desk", "Europe/Berlin"),
];

const AGENTS: &[(&str, &str)] = &[
    ("1000", "James"),
    ("1001", "Maria"),
    ("1002", "Chen"),
    ("1003", "Aisha"),
];
const VISITORS: &[&str] = &[
    "Tom Sandler",
    "Ana Ruiz",
    "Lee Park",
    "Sam Okafor",
    "Ivy Novak",
    "Raj Iyer",
];

pub(crate) fn mix(mut x: u64) -> u64 {
    // splitmix64 finalizer
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The account of [`super::SimConfig::default`]: no chats.
impl Default for SiData {
    fn default() -> Self {
        Self::new(crate::simulator::QUIET_DAY, crate::simulator::QUIET_DAY, 0)
    }
}

impl SiData {
    /// A small account for tests and the demo.
    pub fn new(first_day: NaiveDate, last_day: NaiveDate, chats_per_day: u32) -> Self {
        SiData {
            seed: 42,
            first_day,
            last_day,
            chats_per_day,
            tz: chrono_tz::America::New_York,
            malformed_every: 0,
            revision: 0,
            until: None,
            drift: false,
            rhythm: None,
        }
    }

    fn day_seed(&self, day: NaiveDate, salt: u64) -> u64 {
        mix(self.seed ^ mix(day.to_epoch_days() as u64 ^ (salt << 40)))
    }

    /// Chats (answered and missed) that started in `[start, end)`, by start time.
    pub fn chats_in(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<SimChat> {
        let mut out: Vec<SimChat> = self
            .utc_days(start, end)
            .flat_map(|d| self.chats_of_utc_day(d))
            .filter(|c| c.start >= start && c.start < end && self.exists(c.start))
            .collect();
        out.sort_by(|a, b| a.start.cmp(&b.start).then(a.id.cmp(&b.id)));
        out
    }

    /// Offline messages left in `[start, end)`.
    pub fn offline_in(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<SimChat> {
        let mut out = Vec::new();
        for day in self.utc_days(start, end) {
            let mut rng = fastrand::Rng::with_seed(self.day_seed(day, 2));
            for i in 0..(self.chats_per_day / 10).max(1) {
                let at = day_start_utc(day) + Duration::seconds(rng.i64(0..86_400));
                let mut c = self.chat(
                    &mut rng,
                    format!("off-{}-{i}", day.format("%Y%m%d")),
                    at,
                    "Offline Message",
                    Some(0..1), // never answered
                );
                c.messages.clear();
                if at >= start && at < end && self.exists(at) {
                    out.push(c);
                }
            }
        }
        out
    }

    /// Leads captured in `[start, end)`.
    pub fn contacts_in(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<SimContact> {
        let mut out = Vec::new();
        for day in self.utc_days(start, end) {
            let mut rng = fastrand::Rng::with_seed(self.day_seed(day, 3));
            for i in 0..(self.chats_per_day / 5).max(1) {
                let created = day_start_utc(day) + Duration::seconds(rng.i64(0..86_400));
                let name = VISITORS[rng.usize(..VISITORS.len())];
                let c = SimContact {
                    id: format!("lead-{}-{i}", day.format("%Y%m%d")),
                    widget_id: WIDGETS[rng.usize(..WIDGETS.len())].0.to_string(),
                    name: name.to_string(),
                    email: email(name, i as u64),
                    created,
                };
                if created >= start && created < end && self.exists(created) {
                    out.push(c);
                }
            }
        }
        out
    }

    fn utc_days(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> impl Iterator<Item = NaiveDate> {
        let end = self.until.map_or(end, |u| end.min(u));
        let from = start.date_naive().max(self.first_day);
        let to = (end - Duration::microseconds(1))
            .date_naive()
            .min(self.last_day);
        from.iter_days().take_while(move |d| *d <= to)
    }

    fn exists(&self, t: DateTime<Utc>) -> bool {
        self.until.is_none_or(|u| t < u)
    }

    fn chats_of_utc_day(&self, day: NaiveDate) -> Vec<SimChat> {
        let mut rng = fastrand::Rng::with_seed(self.day_seed(day, 1));
        let mut out = Vec::new();
        let candidates = match self.rhythm {
            Some(_) => self.chats_per_day * CANDIDATES,
            None => self.chats_per_day,
        };
        for i in 0..candidates {
            let at = day_start_utc(day) + Duration::seconds(rng.i64(0..86_400)); // startDate has whole seconds
            let missed_percent = match &self.rhythm {
                Some(r) if rng.f64() >= r.keep(at) => continue,
                Some(r) => r.missed_percent(at, 10, 38),
                None => 22,
            };
            let kind = if rng.u32(0..100) < missed_percent {
                "Missed"
            } else {
                "Answered"
            };
            let reply = match self.rhythm {
                Some(_) => None, // the agent's own speed
                None => Some(3_000..600_000),
            };
            out.push(self.chat(
                &mut rng,
                format!("c{}{:04}", day.format("%Y%m%d"), i),
                at,
                kind,
                reply,
            ));
        }
        // Special chats of the local days around this UTC day that start on it.
        for local in [day - Duration::days(1), day, day + Duration::days(1)] {
            for (j, (at, reply_ms)) in self.special_starts(local).into_iter().enumerate() {
                if at.date_naive() == day {
                    let mut rng = fastrand::Rng::with_seed(self.day_seed(local, 10 + j as u64));
                    out.push(self.chat(
                        &mut rng,
                        format!("s{}{j}", local.format("%Y%m%d")),
                        at,
                        "Answered",
                        Some(reply_ms),
                    ));
                }
            }
        }
        out
    }

    /// 23:50 local (the chat runs past midnight), on a fall-back night both
    /// instants called 01:30, and on Fridays 16:50, answered on Monday
    /// morning (a wait over the weekend); each with how long the first
    /// reply takes, in milliseconds.
    fn special_starts(&self, local: NaiveDate) -> Vec<(DateTime<Utc>, Range<i64>)> {
        let at = |h, m| {
            self.tz.from_local_datetime(
                &local.and_time(NaiveTime::from_hms_opt(h, m, 0).expect("valid")),
            )
        };
        let mut out = Vec::new();
        out.extend(
            at(23, 50)
                .earliest()
                .map(|t| (t.with_timezone(&Utc), 600_000..900_000)),
        );
        if let chrono::LocalResult::Ambiguous(a, b) = at(1, 30) {
            out.push((a.with_timezone(&Utc), 600_000..900_000));
            out.push((b.with_timezone(&Utc), 600_000..900_000));
        }
        if local.weekday() == Weekday::Fri {
            // 64 h 10 min .. 65 h: Monday between about 09:00 and 09:50.
            out.extend(
                at(16, 50)
                    .earliest()
                    .map(|t| (t.with_timezone(&Utc), 231_000_000..234_000_000)),
            );
        }
        out
    }

    fn chat(
        &self,
        rng: &mut fastrand::Rng,
        id: String,
        start: DateTime<Utc>,
        chat_type: &'static str,
        reply_ms: Option<Range<i64>>,
    ) -> SimChat {
        let h = mix(self.seed
            ^ id.bytes()
                .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64)));
        let visitor = VISITORS[rng.usize(..VISITORS.len())];
        let visitor_no = rng.u64(0..10_000);
        let agent_no = rng.usize(..AGENTS.len());
        let (aid, aname) = AGENTS[agent_no];
        let reply_ms = reply_ms.unwrap_or_else(|| agent_reply_ms(agent_no));
        let agent = Agent {
            id: aid.into(),
            name: aname.into(),
            email: format!("{}@example.com", aname.to_lowercase()),
        };
        let ms = |t: DateTime<Utc>| t.timestamp_millis();
        let mut messages = Vec::new();
        let mut t = start;
        let said = |kind, who: &str, t: DateTime<Utc>, body: &str| SimMessage {
            kind,
            nickname: who.to_string(),
            ts_ms: ms(t),
            body: body.to_string(),
        };
        if chat_type == "Answered" && rng.u32(0..100) < 30 {
            messages.push(said("messageToVisitor", aname, t, "Hi! How can we help?"));
            // greeting before the visitor speaks
        }
        t += Duration::milliseconds(rng.i64(1_000..20_000));
        // Personal data as visitors type it, in some chats: the email (in
        // mixed case), the phone, a payment card; and what must survive
        // redaction: an order number, a date, a time, a price.
        let visitor_email = email(visitor, visitor_no);
        let visitor_phone = phone(visitor_no);
        let first = match visitor_no % 4 {
            0 => format!(
                "Hi, I'm {visitor}. Reach me at {} or {visitor_phone}.",
                visitor_email.to_uppercase()
            ),
            1 => format!(
                "Please charge my card {CARD} for order #123-456-789 of 2025-10-27, $49.99."
            ),
            _ => "Hi I have a question about your service.".to_string(),
        };
        messages.push(said("messageToAgent", visitor, t, &first));
        if chat_type == "Answered" {
            t += Duration::milliseconds(rng.i64(reply_ms));
            messages.push(said("messageToVisitor", aname, t, "Hi there! I can help."));
            for k in 0..rng.u32(0..4) {
                t += Duration::milliseconds(rng.i64(5_000..120_000));
                let (kind, who) = if k % 2 == 0 {
                    ("messageToAgent", visitor)
                } else {
                    ("messageToVisitor", aname)
                };
                messages.push(said(kind, who, t, "…"));
            }
        } else if rng.bool() {
            t += Duration::milliseconds(rng.i64(10_000..60_000));
            messages.push(said("messageToAgent", visitor, t, "Anyone there?"));
        }
        SimChat {
            id,
            chat_type,
            widget_id: WIDGETS[rng.usize(..WIDGETS.len())].0.to_string(),
            visitor_id: format!("v-{visitor_no:05}"),
            visitor_name: visitor.to_string(),
            visitor_email: if visitor_no % 3 == 0 {
                mixed_case(&visitor_email)
            } else {
                visitor_email
            },
            visitor_phone,
            agent: (chat_type == "Answered").then_some(agent),
            start,
            duration_s: (t - start).num_seconds(),
            visits: 1 + rng.i64(0..20) + self.revision as i64,
            messages,
            malformed: self.malformed_every > 0 && h % self.malformed_every == 0,
            twelve_hour: h % 5 == 1,
        }
    }

    /// The local date of a chat in `tz` (what its dt must be).
    pub fn local_dt(&self, c: &SimChat, tz: Tz) -> NaiveDate {
        local_date(c.start, tz)
    }
}

fn day_start_utc(d: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&d.and_time(NaiveTime::MIN))
}

fn email(name: &str, n: u64) -> String {
    format!("{}.{n}@example.org", name.to_lowercase().replace(' ', "."))
}

/// A payment card number visitors type (Luhn-valid: a test card).
pub const CARD: &str = "4111 1111 1111 1111";

/// A visitor's phone as typed, in one of three styles.
pub fn phone(n: u64) -> String {
    match n % 3 {
        0 => format!("+1 (555) 010-{:04}", n % 10_000),
        1 => format!("555-010-{:04}", n % 10_000),
        _ => format!("+44 20 7946 {:04}", n % 10_000),
    }
}

/// An email as some visitors type it: `Ann.Lee.7@Example.ORG`.
fn mixed_case(email: &str) -> String {
    let (local, domain) = email.split_once('@').unwrap_or((email, ""));
    let mut up = true;
    let local: String = local
        .chars()
        .map(|c| {
            let out = if up { c.to_ascii_uppercase() } else { c };
            up = c == '.';
            out
        })
        .collect();
    let domain = domain
        .split_once('.')
        .map(|(a, b)| format!("{}{}.{}", a[..1].to_uppercase(), &a[1..], b.to_uppercase()))
        .unwrap_or_default();
    format!("{local}@{domain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_covers_the_special_cases() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let data = SiData::new(d("2025-10-30"), d("2025-11-05"), 20);
        let (a, b) =
            crate::simulator::clock::local_range(d("2025-11-01"), d("2025-11-03"), data.tz);
        let one = data.chats_in(a, b);
        let two = data.chats_in(a, b);
        assert_eq!(one.len(), two.len());
        assert!(one
            .iter()
            .zip(&two)
            .all(|(x, y)| x.id == y.id && x.start == y.start));
        // Two chats at local 01:30 on the fall-back night, an hour apart.
        let fall: Vec<_> = one
            .iter()
            .filter(|c| c.id.starts_with("s20251102") && c.id != "s202511020")
            .collect();
        assert_eq!(fall.len(), 2);
        assert_eq!((fall[1].start - fall[0].start).num_hours(), 1);
        // The 23:50 chat has a message after local midnight.
        let late = one.iter().find(|c| c.id == "s202511010").unwrap();
        let last = late.messages.last().unwrap().ts_ms;
        let last_local = DateTime::from_timestamp_millis(last)
            .unwrap()
            .with_timezone(&data.tz)
            .date_naive();
        assert_eq!(last_local, d("2025-11-02"));
    }
}
