//! Boards and jobs as the API shows them: times as RFC 3339 (UTC).

use serde_json::{json, Value};

use crate::store::{Board, Job, Millis};

/// `2026-12-04T13:00:00Z` for a time in milliseconds.
pub fn rfc3339(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = uboot_scripts::image::timestamp::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn time(t: Option<Millis>) -> Value {
    t.map_or(Value::Null, |t| Value::String(rfc3339(t)))
}

/// A board object.
pub fn board(b: &Board) -> Value {
    json!({
        "id": b.id,
        "device_type": b.device_type,
        "state": b.state,
        "health": b.health,
        "approved": b.approved,
        "from_config": b.from_config,
        "mac": b.mac,
        "address": b.address,
        "cloned": b.cloned,
        "current_job": b.current_job,
        "last_checkin": time(b.last_checkin),
        "master_boot": time(b.master_boot),
        "info": b.info,
        "appliance": b.appliance,
    })
}

/// A job object.
pub fn job(j: &Job) -> Value {
    json!({
        "id": j.id,
        "name": j.name,
        "device_type": j.device_type,
        "priority": j.priority,
        "state": j.state,
        "health": j.health,
        "board": j.board,
        "submitted": rfc3339(j.submitted),
        "started": time(j.started),
        "ended": time(j.ended),
        "error_type": j.error_type,
        "error": j.error,
        "appliance": j.appliance,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_796_389_200_123), "2026-12-04T13:00:00Z");
    }
}
