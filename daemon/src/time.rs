//! Pyroscope's time syntax for `from` / `until`: `now-1h`, Unix seconds, ms, µs or ns.

/// Why a time parameter was refused.
#[derive(Debug, thiserror::Error)]
#[error("{param}={value:?} is not a time: use now, now-1h, now-30m, now-7d, or Unix seconds/ms/ns")]
pub struct TimeError {
    pub param: &'static str,
    pub value: String,
}

/// Parses a time at `now_ns`, returning Unix nanoseconds.
pub fn parse(param: &'static str, raw: &str, now_ns: i64) -> Result<i64, TimeError> {
    let err = || TimeError {
        param,
        value: raw.to_string(),
    };
    let s: String = raw
        .chars()
        .filter(|c| !matches!(c, '_' | ',' | ' '))
        .collect();
    if s.is_empty() || s == "now" {
        return Ok(now_ns);
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let v: i64 = s.parse().map_err(|_| err())?;
        return Ok(match s.len() {
            19.. => v,
            16..=18 => v * 1_000,
            13..=15 => v * 1_000_000,
            _ => v * 1_000_000_000,
        });
    }
    let Some(rest) = s.strip_prefix("now") else {
        return Err(err());
    };
    let (sign, mut rest) = match rest.as_bytes().first() {
        Some(b'-') => (-1, &rest[1..]),
        Some(b'+') => (1, &rest[1..]),
        _ => return Err(err()),
    };
    if rest.is_empty() {
        return Err(err());
    }
    let mut offset_s: i64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "s" | "sec" | "second" | "seconds" => 1,
            "m" | "min" | "minute" | "minutes" => 60,
            "h" | "hour" | "hours" => 3_600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 7 * 86_400,
            "M" | "mon" | "month" | "months" => 30 * 86_400,
            "y" | "year" | "years" => 365 * 86_400,
            _ => return Err(err()),
        };
        offset_s = offset_s.saturating_add(n.saturating_mul(secs));
    }
    Ok(now_ns.saturating_add(sign * offset_s.saturating_mul(1_000_000_000)))
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000_000_000;

    #[test]
    fn parses_relative_and_absolute_times() {
        assert_eq!(parse("from", "now", NOW).unwrap(), NOW);
        assert_eq!(
            parse("from", "now-1h", NOW).unwrap(),
            NOW - 3_600_000_000_000
        );
        assert_eq!(
            parse("from", "now-1h30m", NOW).unwrap(),
            NOW - 5_400_000_000_000
        );
        assert_eq!(
            parse("from", "now-7d", NOW).unwrap(),
            NOW - 7 * 86_400_000_000_000
        );
        assert_eq!(parse("from", "1700000000", NOW).unwrap(), NOW);
        assert_eq!(parse("from", "1700000000000", NOW).unwrap(), NOW);
        assert_eq!(parse("from", "1700000000000000000", NOW).unwrap(), NOW);
    }

    #[test]
    fn refuses_garbage() {
        assert!(parse("from", "yesterday", NOW).is_err());
        assert!(parse("from", "now-1x", NOW).is_err());
        assert!(parse("until", "now-", NOW).is_err());
    }
}
