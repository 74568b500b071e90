//! One JSON object per request on stdout, with Envoy's access-log field names.

use std::{
    io::Write,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize)]
pub struct AccessLogEntry {
    pub start_time: String,
    pub method: String,
    pub path: String,
    pub protocol: String,
    pub response_code: u16,
    pub response_flags: String,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration: u64,
    pub upstream_host: String,
    pub x_request_id: String,
    pub authority: String,
    pub route_name: String,
    pub upstream_cluster: String,
    pub downstream_remote_address: String,
    pub reporter: &'static str,
}

impl AccessLogEntry {
    pub fn write(&self) {
        if let Ok(mut line) = serde_json::to_vec(self) {
            line.push(b'\n');
            // A closed stdout must not take requests down with it.
            let _ = std::io::stdout().lock().write_all(&line);
        }
    }
}

/// `2026-11-22T16:52:20.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, dd) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_times_as_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_366_340_123);
        assert_eq!(rfc3339(t), "2026-11-22T16:52:20.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn serialises_envoy_field_names() {
        let e = AccessLogEntry {
            method: "GET".into(),
            response_code: 200,
            response_flags: "-".into(),
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        for k in [
            "start_time",
            "method",
            "path",
            "protocol",
            "response_code",
            "response_flags",
            "bytes_received",
            "bytes_sent",
            "duration",
            "upstream_host",
            "x_request_id",
            "authority",
            "route_name",
            "upstream_cluster",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
    }
}
