//! The one parser for every duration on the command line (`--timeout 30s`,
//! `--max-age 90d`, `--interval 1m`), so that each flag reads the same way.

use std::time::Duration;

/// Parses a duration such as `30s`, `10m`, `1h30m` or `90d`. A bare number
/// is refused with a hint rather than guessed at: `--max-age 90` could mean
/// seconds or days.
pub fn parse(raw: &str) -> Result<Duration, String> {
    let text = raw.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{raw}` has no unit: write {text}s, {text}m, {text}h or {text}d"
        ));
    }
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("`{raw}` is not a duration such as 30s, 10m or 90d: {e}"))?;
    if d.is_zero() {
        return Err(format!("`{raw}` is zero"));
    }
    Ok(d)
}

/// Validates a duration and keeps its text (for flags passed on as written,
/// such as a PromQL range).
pub fn text(raw: &str) -> Result<String, String> {
    parse(raw).map(|_| raw.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("90d").unwrap(), Duration::from_secs(90 * 86_400));
        assert_eq!(parse("100ms").unwrap(), Duration::from_millis(100));
        assert!(parse("0s").unwrap_err().contains("zero"));
        assert!(parse("30").unwrap_err().contains("no unit: write 30s"));
        assert!(parse("soon").is_err());
        assert!(parse("").is_err());
        assert_eq!(text(" 1h ").unwrap(), "1h");
    }
}
