//! Arbitrary-precision decimals as Kafka Connect's `Decimal` logical type carries them: an
//! unscaled two's-complement big-endian integer (Java's `BigInteger.toByteArray`) plus the
//! schema's scale. Only what the converters need: parse decimal text (Java's `BigDecimal(String)`
//! grammar), rescale exactly, and print as Java's `BigDecimal.toString` does.

use crate::error::ConversionError;

/// Longest unscaled value accepted, in decimal digits; Jackson refuses numbers longer than
/// 1000 characters, and the quadratic base conversion below must stay cheap on hostile input.
const MAX_DIGITS: usize = 1000;
/// Largest exponent accepted in decimal text (Java allows any `int`; nobody needs more).
const MAX_EXPONENT: i64 = 100_000;

/// A decimal number: sign, magnitude digits (no leading zeros; "0" for zero) and scale, so the
/// value is `digits × 10^-scale`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BigDecimal {
    pub negative: bool,
    pub digits: String,
    pub scale: i64,
}

impl BigDecimal {
    /// Parses Java's `new BigDecimal(String)` grammar: `[+-]digits[.digits][(e|E)[+-]digits]`,
    /// with at least one digit on either side of the point.
    pub fn parse(text: &str) -> Option<BigDecimal> {
        let bytes = text.as_bytes();
        let mut i = 0;
        let negative = match bytes.first() {
            Some(b'-') => {
                i = 1;
                true
            }
            Some(b'+') => {
                i = 1;
                false
            }
            _ => false,
        };
        let mut digits = String::new();
        let mut frac_len: i64 = 0;
        let mut seen_point = false;
        let mut any_digit = false;
        while i < bytes.len() {
            match bytes[i] {
                b @ b'0'..=b'9' => {
                    any_digit = true;
                    if !(digits.is_empty() && b == b'0') {
                        digits.push(char::from(b));
                    }
                    if seen_point {
                        frac_len += 1;
                    }
                }
                b'.' if !seen_point => seen_point = true,
                b'e' | b'E' => break,
                _ => return None,
            }
            i += 1;
        }
        if !any_digit || digits.len() > MAX_DIGITS {
            return None;
        }
        let mut exponent: i64 = 0;
        if i < bytes.len() {
            let exp_text = &text[i + 1..];
            let unsigned = exp_text.strip_prefix(['+', '-']).unwrap_or(exp_text);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            exponent = exp_text.parse().ok()?;
            if exponent.abs() > MAX_EXPONENT {
                return None;
            }
        }
        if digits.is_empty() {
            digits.push('0');
        }
        Some(BigDecimal {
            negative: negative && digits != "0",
            digits,
            scale: frac_len - exponent,
        })
    }

    /// From the unscaled two's-complement bytes of a `Decimal` value and the schema's scale.
    pub fn from_unscaled(bytes: &[u8], scale: i32) -> Result<BigDecimal, ConversionError> {
        let Some(&first) = bytes.first() else {
            return Err(ConversionError::new(
                "invalid decimal: the unscaled value has no bytes",
            ));
        };
        if bytes.len() * 5 / 2 > MAX_DIGITS {
            return Err(ConversionError::new(format!(
                "invalid decimal: the unscaled value is too large ({} bytes)",
                bytes.len()
            )));
        }
        let negative = first & 0x80 != 0;
        let magnitude: Vec<u8> = if negative {
            negate(bytes)
        } else {
            bytes.to_vec()
        };
        // Base 10^9 limbs, least significant first.
        let mut limbs: Vec<u64> = vec![0];
        for &b in &magnitude {
            let mut carry = u64::from(b);
            for limb in limbs.iter_mut() {
                let v = *limb * 256 + carry;
                *limb = v % 1_000_000_000;
                carry = v / 1_000_000_000;
            }
            while carry > 0 {
                limbs.push(carry % 1_000_000_000);
                carry /= 1_000_000_000;
            }
        }
        let mut digits = String::new();
        for (i, limb) in limbs.iter().rev().enumerate() {
            if i == 0 {
                digits.push_str(&limb.to_string());
            } else {
                digits.push_str(&format!("{limb:09}"));
            }
        }
        Ok(BigDecimal {
            negative: negative && digits != "0",
            digits,
            scale: i64::from(scale),
        })
    }

    /// The same value at `scale`, if no digit is lost (Java's `setScale(scale)` without
    /// rounding).
    pub fn with_scale(&self, scale: i64) -> Option<BigDecimal> {
        let mut digits = self.digits.clone();
        if scale >= self.scale {
            let add = usize::try_from(scale - self.scale).ok()?;
            if digits != "0" {
                if digits.len() + add > MAX_DIGITS {
                    return None;
                }
                digits.extend(std::iter::repeat_n('0', add));
            }
        } else {
            let drop = usize::try_from(self.scale - scale).ok()?;
            if digits != "0" {
                if drop >= digits.len() || !digits[digits.len() - drop..].bytes().all(|b| b == b'0')
                {
                    return None;
                }
                digits.truncate(digits.len() - drop);
            }
        }
        Some(BigDecimal {
            negative: self.negative,
            digits,
            scale,
        })
    }

    /// The integer value, if the number has no fractional part and fits an `i64`.
    pub fn to_i64(&self) -> Option<i64> {
        let int = if self.scale > 0 {
            self.with_scale(0)?
        } else {
            self.clone()
        };
        let digits = if int.scale < 0 {
            let zeros = usize::try_from(-int.scale).ok()?;
            if int.digits == "0" {
                "0".to_string()
            } else {
                if int.digits.len() + zeros > 19 {
                    return None;
                }
                format!("{}{}", int.digits, "0".repeat(zeros))
            }
        } else {
            int.digits
        };
        if digits.len() > 19 {
            return None;
        }
        let magnitude: i128 = digits.parse().ok()?;
        let value = if self.negative { -magnitude } else { magnitude };
        i64::try_from(value).ok()
    }

    /// Whether the value has no fractional part.
    pub fn is_integral(&self) -> bool {
        self.scale <= 0 || self.with_scale(0).is_some()
    }

    /// The unscaled value as Java's `BigInteger.toByteArray` writes it: minimal two's
    /// complement, big-endian, at least one byte.
    pub fn unscaled_bytes(&self) -> Vec<u8> {
        // Base 2^32 limbs, least significant first.
        let mut limbs: Vec<u64> = vec![0];
        for d in self.digits.bytes() {
            let mut carry = u64::from(d - b'0');
            for limb in limbs.iter_mut() {
                let v = *limb * 10 + carry;
                *limb = v & 0xFFFF_FFFF;
                carry = v >> 32;
            }
            if carry > 0 {
                limbs.push(carry);
            }
        }
        let mut magnitude: Vec<u8> = limbs
            .iter()
            .rev()
            .flat_map(|l| (*l as u32).to_be_bytes())
            .collect();
        let first_nonzero = magnitude.iter().position(|&b| b != 0);
        magnitude.drain(..first_nonzero.unwrap_or(magnitude.len() - 1));
        if self.negative {
            // Leading 0x00 keeps the magnitude positive before negating.
            let mut positive = vec![0u8];
            positive.extend_from_slice(&magnitude);
            let mut out = negate(&positive);
            // Minimal form: drop leading 0xFF while the next byte keeps the sign bit.
            while out.len() > 1 && out[0] == 0xFF && out[1] & 0x80 != 0 {
                out.remove(0);
            }
            out
        } else {
            if magnitude[0] & 0x80 != 0 {
                magnitude.insert(0, 0);
            }
            magnitude
        }
    }

    /// Java's `BigDecimal.toString`: plain notation unless the scale is negative or the
    /// adjusted exponent is below -6, then scientific (`1.23E+5`, `1E-10`).
    pub fn to_java_string(&self) -> String {
        let mut out = String::new();
        if self.negative {
            out.push('-');
        }
        let coeff = &self.digits;
        let len = i64::try_from(coeff.len()).unwrap_or(i64::MAX);
        if self.scale == 0 {
            out.push_str(coeff);
            return out;
        }
        let adjusted = -self.scale + (len - 1);
        if self.scale > 0 && adjusted >= -6 {
            let pad = self.scale - len;
            if pad >= 0 {
                out.push_str("0.");
                out.extend(std::iter::repeat_n('0', usize::try_from(pad).unwrap_or(0)));
                out.push_str(coeff);
            } else {
                let point = usize::try_from(len - self.scale).unwrap_or(0);
                out.push_str(&coeff[..point]);
                out.push('.');
                out.push_str(&coeff[point..]);
            }
        } else {
            out.push_str(&coeff[..1]);
            if coeff.len() > 1 {
                out.push('.');
                out.push_str(&coeff[1..]);
            }
            if adjusted != 0 {
                out.push('E');
                if adjusted > 0 {
                    out.push('+');
                }
                out.push_str(&adjusted.to_string());
            }
        }
        out
    }
}

/// Two's-complement negation of a big-endian integer (same width).
fn negate(bytes: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = bytes.iter().map(|b| !b).collect();
    for b in out.iter_mut().rev() {
        let (v, overflow) = b.overflowing_add(1);
        *b = v;
        if !overflow {
            break;
        }
    }
    out
}

/// The `scale` parameter of a `Decimal` schema, as Kafka's `Decimal.scale` reads it.
pub(crate) fn schema_scale(
    parameters: &std::collections::HashMap<String, String>,
) -> Result<i32, ConversionError> {
    let text = parameters
        .get("scale")
        .ok_or_else(|| ConversionError::new("invalid decimal schema: scale parameter not found"))?;
    text.parse().map_err(|_| {
        ConversionError::new(format!(
            "invalid scale parameter found in decimal schema: {text:?}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dec(text: &str) -> BigDecimal {
        BigDecimal::parse(text).unwrap()
    }

    #[test]
    fn unscaled_bytes_match_java_big_integer() {
        // BigInteger.valueOf(n).toByteArray() for a few edges.
        let cases: &[(&str, &[u8])] = &[
            ("0", &[0]),
            ("1", &[1]),
            ("127", &[0x7F]),
            ("128", &[0x00, 0x80]),
            ("156", &[0x00, 0x9C]),
            ("255", &[0x00, 0xFF]),
            ("256", &[0x01, 0x00]),
            ("-1", &[0xFF]),
            ("-128", &[0x80]),
            ("-129", &[0xFF, 0x7F]),
            ("-156", &[0xFF, 0x64]),
            ("-256", &[0xFF, 0x00]),
            ("1234", &[0x04, 0xD2]),
        ];
        for (text, bytes) in cases {
            assert_eq!(dec(text).unscaled_bytes(), bytes.to_vec(), "{text}");
            let back = BigDecimal::from_unscaled(bytes, 0).unwrap();
            assert_eq!(back.to_java_string(), *text, "{bytes:?}");
        }
    }

    #[test]
    fn java_big_decimal_to_string() {
        let cases = [
            ("156", 2, "1.56"),
            ("15600", 4, "1.5600"),
            ("1", 10, "1E-10"),
            ("1", 7, "1E-7"),
            ("1", 6, "0.000001"),
            ("0", 2, "0.00"),
            ("0", -2, "0E+2"),
            ("12", -3, "1.2E+4"),
            ("-156", 2, "-1.56"),
            ("123456789123456789", 17, "1.23456789123456789"),
        ];
        for (digits, scale, expected) in cases {
            let d = BigDecimal::parse(digits).unwrap();
            let d = BigDecimal { scale, ..d };
            assert_eq!(d.to_java_string(), expected);
        }
    }

    #[test]
    fn parse_and_rescale() {
        assert_eq!(
            dec("1.56").with_scale(2).unwrap().unscaled_bytes(),
            vec![0x00, 0x9C]
        );
        assert_eq!(dec("1.5600").with_scale(4).unwrap().digits, "15600");
        assert_eq!(dec("1.5").with_scale(2).unwrap().digits, "150");
        assert!(dec("1.234").with_scale(2).is_none());
        assert_eq!(dec("1.2e1").to_i64(), Some(12));
        assert_eq!(dec("0012").to_i64(), Some(12));
        assert_eq!(dec("-9223372036854775808").to_i64(), Some(i64::MIN));
        assert_eq!(dec("9223372036854775808").to_i64(), None);
        assert_eq!(dec("12.5").to_i64(), None);
        assert!(dec("1e3").is_integral());
        assert!(!dec("0.5").is_integral());
        for bad in ["", "-", ".", "1e", "1e+", "x", "1.2.3", "NaN", "1_0"] {
            assert!(BigDecimal::parse(bad).is_none(), "{bad}");
        }
        assert!(BigDecimal::from_unscaled(&[], 2).is_err());
        assert!(BigDecimal::from_unscaled(&[0; 4096], 2).is_err());
    }

    proptest! {
        #[test]
        fn bytes_round_trip_through_text(n in any::<i64>(), scale in -5i32..20) {
            let d = BigDecimal::parse(&n.to_string()).unwrap();
            let bytes = d.unscaled_bytes();
            // Java's BigInteger.toByteArray is the minimal two's complement of n.
            let full = n.to_be_bytes();
            let skip = (0..7)
                .take_while(|&i| {
                    (full[i] == 0x00 && full[i + 1] & 0x80 == 0)
                        || (full[i] == 0xFF && full[i + 1] & 0x80 != 0)
                })
                .count();
            prop_assert_eq!(&bytes, &full[skip..].to_vec());
            let back = BigDecimal::from_unscaled(&bytes, scale).unwrap();
            let reparsed = BigDecimal::parse(&back.to_java_string()).unwrap();
            prop_assert_eq!(reparsed.with_scale(i64::from(scale)).unwrap().unscaled_bytes(), bytes);
        }
    }
}
