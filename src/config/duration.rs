//! Durations in Go's syntax, as Dapr writes them in flags and in its `Configuration`.

use std::time::Duration;

/// Parses `24h`, `15m`, `90s`, `500ms`, `365d`, or combinations such as `1h30m` and the
/// form Go prints (`2h0m0s`, `1.5µs`), since Dapr passes `-jwt-ttl=` a Go duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| format!("{text:?}: missing unit (use ms, s, m, h or d)"))?;
        if digits == 0 {
            return Err(format!("{text:?}: expected a number"));
        }
        let value: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?}: bad number"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => value / 1e9,
            // Go's time.Duration.String() writes microseconds as `µs`.
            "us" | "µs" | "μs" => value / 1e6,
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            "d" => value * 86400.0,
            other => {
                return Err(format!(
                    "{text:?}: unknown unit {other:?} (use ms, s, m, h or d)"
                ))
            }
        };
        rest = &rest[unit_len..];
        total = Duration::try_from_secs_f64(seconds)
            .ok()
            .and_then(|d| total.checked_add(d))
            .filter(|d| *d <= MAX_DURATION)
            .ok_or_else(|| {
                format!("{text:?}: out of range (durations end at Go's limit, about 292 years)")
            })?;
    }
    Ok(total)
}

/// The longest duration accepted anywhere: Go's (`math.MaxInt64` nanoseconds), so nothing Dapr
/// can pass is refused, and every deadline and expiry computed from a flag stays in range.
pub const MAX_DURATION: Duration = Duration::from_nanos(i64::MAX as u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("365d").unwrap(),
            Duration::from_secs(365 * 86400)
        );
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        // What Go's Duration.String() prints, as Dapr's framework passes it.
        assert_eq!(parse_duration("2h0m0s").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1.5µs").unwrap(), Duration::from_nanos(1500));
        assert_eq!(parse_duration("3us").unwrap(), Duration::from_micros(3));
        assert_eq!(parse_duration("7ns").unwrap(), Duration::from_nanos(7));
        for bad in ["", "h", "10", "10x", "-5m", "1.5.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        // Out of range is an error, never a panic or a wrapped value.
        for huge in [
            "10000000000000000000s",
            "10000000000000000000s10000000000000000000s",
            "1e400s",
            "293y",
            "106752d",
            "2562048h",
        ] {
            assert!(parse_duration(huge).is_err(), "{huge:?} accepted");
        }
        assert_eq!(
            parse_duration("106751d").unwrap(),
            Duration::from_secs(106_751 * 86_400)
        );
    }

    proptest::proptest! {
        // Whatever the text, parsing ends in a value within Go's range or an error.
        #[test]
        fn durations_never_panic(text in "[0-9.]{0,24}(ns|us|ms|s|m|h|d|x)?([0-9.]{0,24}(s|h|d))?") {
            if let Ok(d) = parse_duration(&text) {
                proptest::prop_assert!(d <= MAX_DURATION);
            }
        }
    }
}
