//! Variable Byte Integers (§1.5.5): 1 to 4 bytes, 7 bits each, least significant group first.

use bytes::BufMut;

use crate::Malformed;

/// The largest value a Variable Byte Integer can hold: 268,435,455.
pub const VARIABLE_BYTE_INTEGER_MAX: u32 = 268_435_455;

/// Reads a Variable Byte Integer from the start of `bytes`.
///
/// Returns `Ok(None)` when `bytes` ends before the last byte of the integer, and
/// `Ok(Some((value, length)))` otherwise. Non-minimal encodings are accepted on input; a fifth
/// byte is [`Malformed::VariableByteIntegerTooLong`] [MQTT-1.5.5-1].
pub fn read_variable_byte_integer(bytes: &[u8]) -> Result<Option<(u32, usize)>, Malformed> {
    let mut value: u32 = 0;
    for (index, byte) in bytes.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(Some((value, index + 1)));
        }
    }
    if bytes.len() >= 4 {
        Err(Malformed::VariableByteIntegerTooLong)
    } else {
        Ok(None)
    }
}

/// The number of bytes `value` takes as a Variable Byte Integer (1 to 4; values above the maximum
/// are the caller's error and count as 4).
pub const fn variable_byte_integer_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes `value` in the fewest bytes [MQTT-1.5.5-1]. The caller checks that `value` is at most
/// [`VARIABLE_BYTE_INTEGER_MAX`].
pub(crate) fn put_variable_byte_integer(out: &mut impl BufMut, value: usize) {
    let mut value = value;
    loop {
        // Truncation to the low seven bits is the encoding.
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_table_1_1_boundaries() {
        let cases: &[(u32, &[u8])] = &[
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for &(value, bytes) in cases {
            let mut out = Vec::new();
            put_variable_byte_integer(&mut out, value as usize);
            assert_eq!(out, bytes, "encoding {value}");
            assert_eq!(variable_byte_integer_len(value as usize), bytes.len());
            assert_eq!(
                read_variable_byte_integer(bytes),
                Ok(Some((value, bytes.len())))
            );
        }
    }

    #[test]
    fn incomplete_needs_more_bytes() {
        assert_eq!(read_variable_byte_integer(&[]), Ok(None));
        assert_eq!(read_variable_byte_integer(&[0x80]), Ok(None));
        assert_eq!(read_variable_byte_integer(&[0xFF, 0xFF, 0xFF]), Ok(None));
    }

    #[test]
    fn fifth_byte_is_malformed_mqtt_1_5_5_1() {
        assert_eq!(
            read_variable_byte_integer(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(Malformed::VariableByteIntegerTooLong)
        );
        assert_eq!(
            read_variable_byte_integer(&[0x80, 0x80, 0x80, 0x80]),
            Err(Malformed::VariableByteIntegerTooLong)
        );
    }

    #[test]
    fn non_minimal_input_is_accepted() {
        assert_eq!(read_variable_byte_integer(&[0x80, 0x00]), Ok(Some((0, 2))));
    }
}
