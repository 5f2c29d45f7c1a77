//! Reading command arguments that may come from stdin (`-`).

use std::io::Read;

use anyhow::{bail, Context, Result};

/// The argument itself, or all of stdin when it is `-`.
pub fn arg_or_stdin(arg: &str) -> Result<String> {
    if arg != "-" {
        return Ok(arg.to_string());
    }
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("reading stdin")?;
    Ok(s)
}

/// Hex digits to bytes; whitespace is ignored so `xxd -p` output works.
pub fn parse_hex(text: &str) -> Result<Vec<u8>> {
    let digits: Vec<(usize, char)> = text
        .char_indices()
        .filter(|(_, c)| !c.is_whitespace())
        .collect();
    if let Some((pos, c)) = digits.iter().find(|(_, c)| !c.is_ascii_hexdigit()) {
        bail!("bad hex: character {c:?} at position {pos} is not a hex digit");
    }
    if digits.len() % 2 != 0 {
        bail!("bad hex: odd number of digits ({})", digits.len());
    }
    Ok(digits
        .chunks(2)
        .map(|p| {
            let hi = p[0].1.to_digit(16).expect("checked above");
            let lo = p[1].1.to_digit(16).expect("checked above");
            (hi << 4 | lo) as u8
        })
        .collect())
}

/// Bytes as lowercase hex on one line.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        assert_eq!(parse_hex("01 ab\nFF").unwrap(), [1, 0xab, 0xff]);
        assert_eq!(to_hex(&[1, 0xab, 0xff]), "01abff");
        assert!(parse_hex("0g")
            .unwrap_err()
            .to_string()
            .contains("'g' at position 1"));
        assert!(parse_hex("abc")
            .unwrap_err()
            .to_string()
            .contains("odd number"));
    }
}
