//! CRM records -> rows: one mapper per endpoint (company, contact,
//! conversation), and [`for_each_element`], which walks a top-level JSON array
//! one element at a time, so a large account never becomes one
//! `serde_json::Value` tree. Times are RFC 3339 (`2024-01-15T10:30:00Z`).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::normalize::{time, Cell, Record, Row};
use crate::schema;

/// Calls `f` with each element of the JSON array in `body`, in order, holding
/// one element at a time. Returns how many there were; an error when the body
/// is not an array.
pub fn for_each_element(body: impl std::io::Read, f: impl FnMut(Value)) -> Result<u64, String> {
    struct Each<F>(F, u64);
    impl<'de, F: FnMut(Value)> Visitor<'de> for &mut Each<F> {
        type Value = ();
        fn expecting(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
            out.write_str("a JSON array of records")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(v) = seq.next_element::<Value>()? {
                self.1 += 1;
                (self.0)(v);
            }
            Ok(())
        }
    }
    impl<'de, F: FnMut(Value)> DeserializeSeed<'de> for &mut Each<F> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }
    let mut each = Each(f, 0);
    let mut de = serde_json::Deserializer::from_reader(body);
    (&mut each)
        .deserialize(&mut de)
        .map_err(|e| format!("expected a JSON array of records: {e}"))?;
    de.end()
        .map_err(|e| format!("trailing data after the array: {e}"))?;
    Ok(each.1)
}

/// A parsed record: its row, creation time (dt of conversations) and updatedAt.
#[derive(Debug)]
pub struct Parsed {
    pub row: Row,
    pub created: Option<DateTime<Utc>>,
    pub updated: DateTime<Utc>,
}

fn required_time(r: &mut Record<'_>, field: &str) -> Result<DateTime<Utc>, String> {
    let s = r.required_str(field)?;
    time::parse_naive_utc(&s).map_err(|e| format!("field `{field}`: {e}"))
}

/// id, createdAt, updatedAt: shared by every CRM record.
fn common(r: &mut Record<'_>, key: &str) -> Result<(Option<DateTime<Utc>>, DateTime<Utc>), String> {
    let id = r.required_str("id")?;
    r.set(key, Cell::Str(id));
    let updated = required_time(r, "updatedAt")?;
    r.set("updated_at", Cell::Micros(time::micros(updated)));
    let created = match r.peek("createdAt") {
        None | Some(Value::Null) => None,
        Some(_) => Some(required_time(r, "createdAt")?),
    };
    if let Some(c) = created {
        r.set("created_at", Cell::Micros(time::micros(c)));
    }
    Ok((created, updated))
}

/// Normalizes one record of `endpoint` (companies, contacts, conversations).
pub fn parse(endpoint: &str, raw: Value, extracted_at: i64) -> Result<Parsed, String> {
    let Value::Object(obj) = raw else {
        return Err("record is not a JSON object".into());
    };
    match endpoint {
        "companies" => company(obj, extracted_at),
        "contacts" => contact(obj, extracted_at),
        "conversations" => conversation(obj, extracted_at),
        other => Err(format!("no mapper for endpoint {other}")),
    }
}

fn company(obj: Map<String, Value>, extracted_at: i64) -> Result<Parsed, String> {
    let mut r = Record::new(schema::table("crm.companies"), obj);
    let (created, updated) = common(&mut r, "company_id")?;
    for (column, field) in [
        ("name", "name"),
        ("website", "website"),
        ("industry", "industry"),
        ("stage_id", "stageId"),
        ("logo_url", "logoUrl"),
        ("notes", "notes"),
        ("created_by", "createdBy"),
    ] {
        r.string(column, field);
    }
    r.float("deal_value", "dealValue");
    r.int("position", "position");
    r.naive_utc("last_contact_at", "lastContact");
    r.boolean("is_customer", "isCustomer");
    Ok(Parsed {
        row: r.finish(extracted_at)?,
        created,
        updated,
    })
}

fn contact(obj: Map<String, Value>, extracted_at: i64) -> Result<Parsed, String> {
    let mut r = Record::new(schema::table("crm.contacts"), obj);
    let (created, updated) = common(&mut r, "contact_id")?;
    for (column, field) in [
        ("company_id", "companyId"),
        ("name", "name"),
        ("email", "email"),
        ("phone", "phone"),
        ("title", "title"),
        ("role", "role"),
        ("notes", "notes"),
        ("user_id", "userId"),
    ] {
        r.string(column, field);
    }
    r.boolean("is_primary", "isPrimary");
    Ok(Parsed {
        row: r.finish(extracted_at)?,
        created,
        updated,
    })
}

fn conversation(obj: Map<String, Value>, extracted_at: i64) -> Result<Parsed, String> {
    let mut r = Record::new(schema::table("crm.conversations"), obj);
    let (created, updated) = common(&mut r, "conversation_id")?;
    if created.is_none() {
        return Err("field `createdAt` is missing (it decides the partition)".into());
    }
    for (column, field) in [
        ("company_id", "companyId"),
        ("visitor_name", "visitorName"),
        ("visitor_email", "visitorEmail"),
        ("visitor_ip", "visitorIp"),
        ("user_agent", "userAgent"),
        ("referrer_url", "referrerUrl"),
        ("page_url", "pageUrl"),
        ("status", "status"),
        ("assigned_to_user_id", "assignedToUserId"),
    ] {
        r.string(column, field);
    }
    r.boolean("is_read", "isRead");
    r.boolean("trust_uploads", "trustUploads");
    r.string_list("tags", "tags");
    r.naive_utc("last_message_at", "lastMessageAt");
    Ok(Parsed {
        row: r.finish(extracted_at)?,
        created,
        updated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn walks_an_array_one_element_at_a_time() {
        let mut seen = Vec::new();
        let n = for_each_element(&br#"[{"id":"a"}, {"id":"b"}, 3]"#[..], |v| seen.push(v)).unwrap();
        assert_eq!(n, 3);
        assert_eq!(seen[1], json!({"id": "b"}));
        assert!(for_each_element(&br#"{"error":"x"}"#[..], |_| {}).is_err());
        assert!(for_each_element(&br#"[{"id":"a"}"#[..], |_| {}).is_err());
        assert!(for_each_element(&br#"[] []"#[..], |_| {}).is_err());
    }

    #[test]
    fn conversation_keeps_tags_as_a_list_and_unknown_fields_in_extra() {
        let raw = json!({"id": "conv-123", "companyId": "c1", "visitorEmail": "Jane@Example.com", "status": "open",
            "assignedToUserId": null, "isRead": false, "trustUploads": false, "tags": ["support", "urgent"],
            "lastMessageAt": "2024-01-15T14:30:00Z", "createdAt": "2024-01-15T14:00:00Z", "updatedAt": "2024-01-15T14:30:00.250Z",
            "priority": "high"});
        let p = parse("conversations", raw, 0).unwrap();
        let t = schema::table("crm.conversations");
        let cell = |c: &str| p.row.cells[t.index_of(c).unwrap()].clone();
        assert_eq!(
            cell("tags"),
            Cell::List(vec!["support".into(), "urgent".into()])
        );
        assert_eq!(cell("updated_at"), Cell::Micros(1_705_329_000_250_000));
        assert_eq!(cell("deleted_at"), Cell::Null);
        assert_eq!(p.row.extra.as_deref(), Some(r#"{"priority":"high"}"#));
        let bad = json!({"id": "x", "updatedAt": "2024-01-15T14:30:00Z"});
        assert!(parse("conversations", bad, 0)
            .unwrap_err()
            .contains("createdAt"));
        assert!(parse("companies", json!({"id": "x"}), 0)
            .unwrap_err()
            .contains("updatedAt"));
    }
}
