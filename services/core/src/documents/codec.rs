//! What repositories share to keep their records in documents: serde values as fields, and
//! times as integer microseconds (exact in every store, and ordered as the times are).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Document, DocumentError, Fields};

/// The fields of `value`, which must serialize to a JSON object; `what` names the record in
/// the error.
pub fn to_fields<T: Serialize>(what: &str, value: &T) -> Result<Fields, DocumentError> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(DocumentError::Corrupt { key: what.to_owned(), reason: "not a JSON object".into() }),
        Err(error) => Err(DocumentError::Corrupt { key: what.to_owned(), reason: error.to_string() }),
    }
}

/// The record a document holds; [`DocumentError::Corrupt`] if it does not decode.
pub fn from_fields<T: DeserializeOwned>(document: &Document) -> Result<T, DocumentError> {
    serde_json::from_value(serde_json::Value::Object(document.fields.clone()))
        .map_err(|error| DocumentError::Corrupt { key: document.key.to_string(), reason: error.to_string() })
}

/// Microseconds since the Unix epoch (negative before it, saturating).
pub fn to_micros(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |micros| -micros),
    }
}

/// The time `micros` microseconds from the Unix epoch (the epoch if out of range).
pub fn from_micros(micros: i64) -> SystemTime {
    let distance = Duration::from_micros(micros.unsigned_abs());
    let time = if micros >= 0 { UNIX_EPOCH.checked_add(distance) } else { UNIX_EPOCH.checked_sub(distance) };
    time.unwrap_or(UNIX_EPOCH)
}

/// `time` cut to whole microseconds, as it reads back from a document.
pub fn whole_micros(time: SystemTime) -> SystemTime {
    from_micros(to_micros(time))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_keep_whole_microseconds_on_both_sides_of_the_epoch() {
        for time in [UNIX_EPOCH + Duration::new(1_763_850_000, 123_456_789), UNIX_EPOCH - Duration::new(5, 1_000)] {
            let back = from_micros(to_micros(time));
            assert_eq!(back, whole_micros(time));
            assert!(
                time.duration_since(back).or_else(|e| Ok::<_, ()>(e.duration())).unwrap() < Duration::from_micros(1)
            );
        }
        assert_eq!(to_micros(UNIX_EPOCH - Duration::from_micros(3)), -3);
        for micros in [0, 1, 1_700_000_000_123_456, -1, -86_400_000_001] {
            assert_eq!(to_micros(from_micros(micros)), micros);
        }
    }

    #[test]
    fn records_round_trip_and_non_objects_are_refused() {
        let fields = to_fields("record", &serde_json::json!({"n": 1})).unwrap();
        assert_eq!(fields["n"], 1);
        assert!(to_fields("record", &5).is_err());
    }
}
