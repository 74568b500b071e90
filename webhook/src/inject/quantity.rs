//! Kubernetes resource quantities (`100m`, `40Mi`, `1.5`, `2e3`): checked before they go into
//! the proxy's `resources`, and compared so that a request never exceeds its limit.

/// A quantity that does not follow the Kubernetes grammar, or is negative.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a Kubernetes quantity (examples: 100m, 0.5, 128Mi, 1Gi)")]
pub struct QuantityError(pub String);

/// The value of `text` in base units (cores or bytes), as a float: precise enough to compare
/// requests with limits.
pub fn parse(text: &str) -> Result<f64, QuantityError> {
    let err = || QuantityError(text.to_string());
    let unsigned = text.strip_prefix('+').unwrap_or(text);
    let number_len = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_len);
    let digits = number.replace('.', "");
    if digits.is_empty() || number.matches('.').count() > 1 {
        return Err(err());
    }
    let mantissa: f64 = number.parse().map_err(|_| err())?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => {
            let e = &exp[1..];
            let e = e.strip_prefix('+').unwrap_or(e);
            let (neg, e) = match e.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, e),
            };
            if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            let e: i32 = e.parse().map_err(|_| err())?;
            10f64.powi(if neg { -e } else { e })
        }
        _ => return Err(err()),
    };
    Ok(mantissa * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kubernetes_grammar() {
        assert_eq!(parse("100m").unwrap(), 0.1);
        assert_eq!(parse("2").unwrap(), 2.0);
        assert_eq!(parse("+1.5").unwrap(), 1.5);
        assert_eq!(parse(".5").unwrap(), 0.5);
        assert_eq!(parse("40Mi").unwrap(), 40.0 * 1024.0 * 1024.0);
        assert_eq!(parse("1G").unwrap(), 1e9);
        assert_eq!(parse("2e3").unwrap(), 2000.0);
        assert_eq!(parse("5E-1").unwrap(), 0.5);
        assert!(parse("256Mi").unwrap() > parse("40Mi").unwrap());
        assert!(parse("2000m").unwrap() == parse("2").unwrap());
    }

    #[test]
    fn refuses_what_kubernetes_refuses() {
        for bad in [
            "", "m", "-1", "1.2.3", "10 m", "1mb", "1MI", "abc", "1e", "1e+x", ".",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err, QuantityError(bad.to_string()), "{bad}");
        }
        assert_eq!(
            parse("1mb").unwrap_err().to_string(),
            "\"1mb\" is not a Kubernetes quantity (examples: 100m, 0.5, 128Mi, 1Gi)"
        );
    }
}
