//! Opaque keyset cursors: which list they belong to and the (time, id) of the
//! last row served. Hex-encoded so they are URL-safe; anything that does not
//! decode to a cursor of the same list is refused.

use domain::Timestamp;
use uuid::Uuid;

/// The lists that paginate; a cursor of one is refused by another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Posts,
    Comments,
    Notifications,
}

impl ListKind {
    fn tag(self) -> &'static str {
        match self {
            ListKind::Posts => "p1",
            ListKind::Comments => "c1",
            ListKind::Notifications => "n1",
        }
    }
}

/// The latest instant a cursor may carry: 15 digits of milliseconds (year
/// 33658), as the OpenAPI document's pattern says; PostgreSQL holds instants
/// up to the year 294276, so every such cursor is one it can compare.
const MAX_MILLIS: i64 = 999_999_999_999_999;

/// A position in a list ordered by (time, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub at: Timestamp,
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self, kind: ListKind) -> String {
        let plain = format!(
            "{}|{}|{}",
            kind.tag(),
            self.at.unix_millis(),
            self.id.simple()
        );
        plain.bytes().map(|b| format!("{b:02x}")).collect()
    }

    pub fn decode(raw: &str, kind: ListKind) -> Result<Self, String> {
        let bad = || "the cursor is not one this list handed out".to_owned();
        if raw.len() % 2 != 0 || raw.len() > 200 || !raw.is_ascii() {
            return Err(bad());
        }
        let bytes: Vec<u8> = (0..raw.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&raw[i..i + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        let plain = String::from_utf8(bytes).map_err(|_| bad())?;
        let mut parts = plain.split('|');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(tag), Some(millis), Some(id), None) if tag == kind.tag() => {
                // Every row's time is after 1970 (a cursor carries one of
                // them); an instant PostgreSQL cannot hold is no cursor.
                let millis: i64 = millis.parse().map_err(|_| bad())?;
                if !(0..=MAX_MILLIS).contains(&millis) {
                    return Err(bad());
                }
                Ok(Self {
                    at: Timestamp::from_unix_millis(millis),
                    id: Uuid::try_parse(id).map_err(|_| bad())?,
                })
            }
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_everything_else() {
        let cursor = Cursor {
            at: Timestamp::from_unix_millis(1_795_428_000_123),
            id: Uuid::from_u128(77),
        };
        let encoded = cursor.encode(ListKind::Posts);
        assert_eq!(Cursor::decode(&encoded, ListKind::Posts), Ok(cursor));
        // Instants PostgreSQL cannot hold (found by fuzzing: they were 503).
        let hex = |plain: &str| {
            plain
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        for millis in [
            "-236273862771077",
            "9300000000000000",
            "99999999999999999",
            "-1",
        ] {
            let raw = hex(&format!("p1|{millis}|{}", Uuid::from_u128(77).simple()));
            assert!(Cursor::decode(&raw, ListKind::Posts).is_err(), "{millis}");
        }
        assert!(
            Cursor::decode(&encoded, ListKind::Comments).is_err(),
            "another list's cursor"
        );
        for forged in ["", "zz", "abc", "7031", &encoded[..encoded.len() - 2], "é"] {
            assert!(
                Cursor::decode(forged, ListKind::Posts).is_err(),
                "{forged:?}"
            );
        }
    }
}
