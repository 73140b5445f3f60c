//! The date parts of RFC 5260 section 4.2 (`year`, `month`, … `weekday`) of a moment seen in a
//! zone, and the `+hhmm` zones of `:zone`. Civil dates are computed here (the days-from-civil
//! arithmetic of the proleptic Gregorian calendar) rather than with a date library, because
//! nothing else in the interpreter needs one.

/// The date parts a `date` or `currentdate` test may name.
const PARTS: [&str; 13] = [
    "year", "month", "day", "date", "julian", "hour", "minute", "second", "time", "iso8601", "std11", "zone", "weekday",
];

pub fn is_part(name: &str) -> bool {
    PARTS.contains(&name.to_ascii_lowercase().as_str())
}

/// `+hhmm` or `-hhmm` as seconds east of UTC.
pub fn parse_zone(zone: &str) -> Option<i32> {
    let b = zone.as_bytes();
    if b.len() != 5 || !(b[0] == b'+' || b[0] == b'-') || !b[1..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let hours = i32::from(b[1] - b'0') * 10 + i32::from(b[2] - b'0');
    let minutes = i32::from(b[3] - b'0') * 10 + i32::from(b[4] - b'0');
    if hours > 23 || minutes > 59 {
        return None;
    }
    let secs = hours * 3600 + minutes * 60;
    Some(if b[0] == b'-' { -secs } else { secs })
}

fn zone_text(offset: i32, colon: bool) -> String {
    let sign = if offset < 0 { '-' } else { '+' };
    let abs = offset.unsigned_abs();
    if colon {
        format!("{sign}{:02}:{:02}", abs / 3600, abs % 3600 / 60)
    } else {
        format!("{sign}{:02}{:02}", abs / 3600, abs % 3600 / 60)
    }
}

/// The civil date of a day count since 1970-01-01.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The named part of the moment `timestamp` (seconds since the epoch) in the zone `offset`
/// (seconds east of UTC), as RFC 5260 section 4.2 writes it.
pub fn part(name: &str, timestamp: i64, offset: i32) -> Option<String> {
    let local = timestamp + i64::from(offset);
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    let (year, month, day) = civil(days);
    let (hour, minute, second) = (secs / 3600, secs % 3600 / 60, secs % 60);
    const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    // 1970-01-01 was a Thursday.
    let weekday = (days + 4).rem_euclid(7) as usize;
    Some(match name.to_ascii_lowercase().as_str() {
        "year" => format!("{year:04}"),
        "month" => format!("{month:02}"),
        "day" => format!("{day:02}"),
        "date" => format!("{year:04}-{month:02}-{day:02}"),
        // The Modified Julian Day: days since 1858-11-17, which is day -40587 of the epoch.
        "julian" => (days + 40_587).to_string(),
        "hour" => format!("{hour:02}"),
        "minute" => format!("{minute:02}"),
        "second" => format!("{second:02}"),
        "time" => format!("{hour:02}:{minute:02}:{second:02}"),
        "iso8601" => {
            // UTC is written Z, as RFC 3339 (the profile of ISO 8601 that RFC 5260 cites) does.
            let zone = if offset == 0 { "Z".to_string() } else { zone_text(offset, true) };
            format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{zone}")
        }
        "std11" => format!(
            "{}, {day:02} {} {year:04} {hour:02}:{minute:02}:{second:02} {}",
            WEEKDAYS[weekday],
            MONTHS[month as usize - 1],
            zone_text(offset, false)
        ),
        "zone" => zone_text(offset, false),
        "weekday" => weekday.to_string(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_a_known_moment() {
        // 2009-02-14 13:31:30 UTC, seen at +0100.
        let t = 1_234_618_290;
        assert_eq!(part("date", t, 3600).unwrap(), "2009-02-14");
        assert_eq!(part("time", t, 3600).unwrap(), "14:31:30");
        assert_eq!(part("weekday", t, 3600).unwrap(), "6");
        assert_eq!(part("julian", t, 3600).unwrap(), "54876");
        assert_eq!(part("std11", t, 3600).unwrap(), "Sat, 14 Feb 2009 14:31:30 +0100");
        assert_eq!(part("iso8601", t, -28_800).unwrap(), "2009-02-14T05:31:30-08:00");
        assert_eq!(parse_zone("-0830"), Some(-30_600));
        assert_eq!(parse_zone("0830"), None);
    }
}
