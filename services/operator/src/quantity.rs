//! Kubernetes quantities ("1Gi", "500Mi", "1G", "1024") as byte counts.

/// The pattern a quota must match in the CRD schema: a whole number with an optional binary
/// (`Ki` .. `Ei`) or decimal (`k`, `K`, `M` .. `E`) suffix. Fractions ("1.5Gi") are not allowed:
/// a quota is a whole number of bytes.
pub const QUANTITY_PATTERN: &str = r"^[0-9]+(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E)?$";

/// Why a quantity could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("{0:?} is not a quantity of bytes such as 1Gi, 500Mi or 1G")]
    Syntax(String),
    #[error("{0:?} is more than 2^64 bytes")]
    TooLarge(String),
}

/// Parses a quantity into bytes: binary suffixes are powers of 1024, decimal ones of 1000.
pub fn parse_bytes(quantity: &str) -> Result<u64, QuantityError> {
    let syntax = || QuantityError::Syntax(quantity.to_string());
    let text = quantity.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits);
    if number.is_empty() {
        return Err(syntax());
    }
    let multiplier: u64 = match suffix {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        _ => return Err(syntax()),
    };
    let number: u64 = number.parse().map_err(|_| QuantityError::TooLarge(quantity.to_string()))?;
    number.checked_mul(multiplier).ok_or_else(|| QuantityError::TooLarge(quantity.to_string()))
}

/// Formats bytes for people (status columns): "0", "512", "1.5Ki", "2.0Gi".
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    if bytes < 1024 {
        return bytes.to_string();
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_decimal_suffixes() {
        assert_eq!(parse_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(parse_bytes("500Mi"), Ok(500 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("2k"), Ok(2_000));
        assert_eq!(parse_bytes("2K"), Ok(2_000));
        assert_eq!(parse_bytes("3Ki"), Ok(3072));
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("0"), Ok(0));
        assert_eq!(parse_bytes("15Ei"), Ok(15 << 60));
    }

    #[test]
    fn refuses_what_is_not_a_whole_number_of_bytes() {
        for bad in ["", "Gi", "1.5Gi", "-1Gi", "1gi", "1GiB", "1 Gi", "1m", "1e3"] {
            assert!(matches!(parse_bytes(bad), Err(QuantityError::Syntax(_))), "{bad:?} was accepted");
        }
        assert!(matches!(parse_bytes("16Ei"), Err(QuantityError::TooLarge(_))));
        assert!(matches!(parse_bytes("99999999999999999999"), Err(QuantityError::TooLarge(_))));
    }

    #[test]
    fn pattern_agrees_with_the_parser_on_suffixes() {
        // Every suffix the parser accepts appears in the schema's pattern and the reverse.
        let in_pattern = QUANTITY_PATTERN.split_once('(').unwrap().1.split_once(')').unwrap().0;
        for suffix in in_pattern.split('|') {
            assert!(parse_bytes(&format!("1{suffix}")).is_ok(), "{suffix}");
        }
        assert_eq!(in_pattern.split('|').count(), 13);
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(format_bytes(0), "0");
        assert_eq!(format_bytes(1023), "1023");
        assert_eq!(format_bytes(1536), "1.5Ki");
        assert_eq!(format_bytes(2 << 30), "2.0Gi");
    }
}
