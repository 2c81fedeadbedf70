//! Parsing of the retention limits on the command line: durations such as `2h` and sizes such
//! as `1GiB`, and the words `none` and `default`.

/// A retention limit as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// The limit in milliseconds or bytes; 0 removes it.
    Value(u64),
    /// The value of the broker's configuration file.
    Default,
}

impl Limit {
    /// Returns the value of the admin endpoint's query parameter.
    pub(crate) fn query_value(self) -> String {
        match self {
            Limit::Value(value) => value.to_string(),
            Limit::Default => "default".to_owned(),
        }
    }
}

/// Units of a duration, in milliseconds.
const DURATION_UNITS: [(&str, u64); 6] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
    ("w", 604_800_000),
];

/// Units of a size, in bytes: binary with `i`, decimal without.
const SIZE_UNITS: [(&str, u64); 9] = [
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
];

/// Parses a maximum age such as `90m`, `2h` or `7d` into milliseconds.
pub(crate) fn parse_age(text: &str) -> Result<Limit, String> {
    parse(text, &DURATION_UNITS, false).map_err(|reason| {
        format!(
            "invalid duration {text:?}: {reason}; write a whole number with a unit (ms, s, m, \
             h, d or w), such as 2h, or none to remove the limit, or default for the \
             configured value"
        )
    })
}

/// Parses a maximum size such as `500MiB` or `1GiB` into bytes; a bare number is bytes.
pub(crate) fn parse_size(text: &str) -> Result<Limit, String> {
    parse(text, &SIZE_UNITS, true).map_err(|reason| {
        format!(
            "invalid size {text:?}: {reason}; write a whole number of bytes, optionally with a \
             unit (KiB, MiB, GiB, TiB, or KB, MB, GB, TB), such as 1GiB, or none to remove \
             the limit, or default for the configured value"
        )
    })
}

fn parse(text: &str, units: &[(&str, u64)], bare_number: bool) -> Result<Limit, String> {
    let text = text.trim();
    match text {
        "none" | "0" => return Ok(Limit::Value(0)),
        "default" => return Ok(Limit::Default),
        _ => {}
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err("it does not start with a number".to_owned());
    }
    let number: u64 = digits
        .parse()
        .map_err(|_| "the number is too large".to_owned())?;
    let unit = unit.trim();
    let scale = if unit.is_empty() && bare_number {
        1
    } else if unit.is_empty() {
        return Err("the unit is missing".to_owned());
    } else {
        units
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, scale)| *scale)
            .ok_or_else(|| format!("unknown unit {unit:?}"))?
    };
    number
        .checked_mul(scale)
        .map(Limit::Value)
        .ok_or_else(|| "the value is too large".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_scale_by_unit() {
        assert_eq!(parse_age("2h"), Ok(Limit::Value(7_200_000)));
        assert_eq!(parse_age("90m"), Ok(Limit::Value(5_400_000)));
        assert_eq!(parse_age("1500ms"), Ok(Limit::Value(1_500)));
        assert_eq!(parse_age("7d"), Ok(Limit::Value(604_800_000)));
    }

    #[test]
    fn age_needs_unit() {
        assert!(parse_age("120").is_err());
    }

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_size("1GiB"), Ok(Limit::Value(1 << 30)));
        assert_eq!(parse_size("500MB"), Ok(Limit::Value(500_000_000)));
        assert_eq!(parse_size("4096"), Ok(Limit::Value(4096)));
    }

    #[test]
    fn words_map_to_no_limit_and_default() {
        assert_eq!(parse_age("none"), Ok(Limit::Value(0)));
        assert_eq!(parse_size("default"), Ok(Limit::Default));
    }

    #[test]
    fn invalid_values_are_rejected() {
        for text in ["", "h", "-1h", "1.5GiB", "2x", "99999999999999999999h"] {
            assert!(parse_size(text).is_err(), "size {text:?}");
            assert!(parse_age(text).is_err(), "age {text:?}");
        }
    }

    #[test]
    fn overflow_is_rejected() {
        assert!(parse_age("18446744073709551615w").is_err());
    }

    #[test]
    fn query_values_are_numbers_or_default() {
        assert_eq!(Limit::Value(5).query_value(), "5");
        assert_eq!(Limit::Default.query_value(), "default");
    }
}
