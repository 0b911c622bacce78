//! The data types of §1.5 read from a packet body and written into a buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::string::MAX_STRING_LEN;
use crate::varint::{VARIABLE_BYTE_INTEGER_MAX, put_variable_byte_integer};
use crate::{
    DecodeError, DecodeLimits, EncodeError, Limit, Malformed, MqttString, PacketId, PacketType,
    UserProperty,
};

/// A cursor over the body of one packet (after the fixed header). Every slice it hands out shares
/// the packet's buffer.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Bytes,
    packet: PacketType,
    /// The packet's limits, and what is left of them: shared by the readers `take` makes (a
    /// property list hands its count back with `spent_by`).
    limits: DecodeLimits,
    user_properties_left: u32,
    user_property_bytes_left: u32,
}

impl Reader {
    pub(crate) fn new(buf: Bytes, packet: PacketType) -> Self {
        Self {
            buf,
            packet,
            limits: DecodeLimits::UNLIMITED,
            user_properties_left: u32::MAX,
            user_property_bytes_left: u32::MAX,
        }
    }

    /// The same reader under these limits.
    pub(crate) fn with_limits(self, limits: DecodeLimits) -> Self {
        Self {
            limits,
            user_properties_left: limits.user_properties,
            user_property_bytes_left: limits.user_property_bytes,
            ..self
        }
    }

    /// Takes over what a reader made by [`Reader::take`] left of the packet's limits.
    pub(crate) fn spent_by(&mut self, inner: &Reader) {
        self.user_properties_left = inner.user_properties_left;
        self.user_property_bytes_left = inner.user_property_bytes_left;
    }

    fn limit_exceeded(&self, limit: Limit, maximum: u32) -> DecodeError {
        DecodeError::LimitExceeded {
            packet: self.packet,
            limit,
            maximum,
        }
    }

    pub(crate) fn packet(&self) -> PacketType {
        self.packet
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn end(&self, field: &'static str) -> DecodeError {
        Malformed::UnexpectedEnd {
            packet: self.packet,
            field,
        }
        .into()
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        if self.buf.is_empty() {
            return Err(self.end(field));
        }
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        if self.buf.len() < 2 {
            return Err(self.end(field));
        }
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        if self.buf.len() < 4 {
            return Err(self.end(field));
        }
        Ok(self.buf.get_u32())
    }

    pub(crate) fn variable_byte_integer(
        &mut self,
        field: &'static str,
    ) -> Result<u32, DecodeError> {
        match crate::varint::read_variable_byte_integer(&self.buf)? {
            Some((value, len)) => {
                self.buf.advance(len);
                Ok(value)
            }
            None => Err(self.end(field)),
        }
    }

    /// The next `len` bytes as a reader of their own.
    pub(crate) fn take(&mut self, len: usize, field: &'static str) -> Result<Reader, DecodeError> {
        if self.buf.len() < len {
            return Err(self.end(field));
        }
        Ok(Reader {
            buf: self.buf.split_to(len),
            packet: self.packet,
            limits: self.limits,
            user_properties_left: self.user_properties_left,
            user_property_bytes_left: self.user_property_bytes_left,
        })
    }

    /// Everything that is left.
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Binary Data: a two-byte length and that many bytes (§1.5.6).
    pub(crate) fn binary(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16(field)?);
        if self.buf.len() < len {
            return Err(self.end(field));
        }
        Ok(self.buf.split_to(len))
    }

    /// A UTF-8 Encoded String (§1.5.4): valid UTF-8 [MQTT-1.5.4-1] without U+0000
    /// [MQTT-1.5.4-2].
    pub(crate) fn string(&mut self, field: &'static str) -> Result<MqttString, DecodeError> {
        let bytes = self.binary(field)?;
        validate_utf8(&bytes, field)?;
        Ok(MqttString::from_validated(bytes))
    }

    /// One User Property, counted against the packet's limits before it is decoded.
    pub(crate) fn user_property(&mut self) -> Result<UserProperty, DecodeError> {
        let Some(left) = self.user_properties_left.checked_sub(1) else {
            return Err(self.limit_exceeded(Limit::UserProperties, self.limits.user_properties));
        };
        self.user_properties_left = left;
        let before = self.buf.len();
        let name = self.string("user property name")?;
        let value = self.string("user property value")?;
        // The identifier byte, and the two strings just read.
        let size = u32::try_from(1 + before - self.buf.len()).unwrap_or(u32::MAX);
        let Some(left) = self.user_property_bytes_left.checked_sub(size) else {
            return Err(
                self.limit_exceeded(Limit::UserPropertyBytes, self.limits.user_property_bytes)
            );
        };
        self.user_property_bytes_left = left;
        Ok(UserProperty { name, value })
    }

    /// Counts one more topic filter of a SUBSCRIBE or UNSUBSCRIBE (`count` so far, this one
    /// included) against the packet's limit.
    pub(crate) fn count_filter(&self, count: usize) -> Result<(), DecodeError> {
        if count > self.limits.filters as usize {
            return Err(self.limit_exceeded(Limit::Filters, self.limits.filters));
        }
        Ok(())
    }

    pub(crate) fn packet_id(&mut self) -> Result<PacketId, DecodeError> {
        let id = self.u16("packet identifier")?;
        PacketId::new(id).ok_or_else(|| {
            Malformed::PacketIdentifierZero {
                packet: self.packet,
            }
            .into()
        })
    }

    /// Fails unless every byte has been read.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Malformed::TrailingBytes {
                packet: self.packet,
                count: self.buf.len(),
            }
            .into())
        }
    }
}

fn validate_utf8(bytes: &[u8], field: &'static str) -> Result<(), DecodeError> {
    // `from_utf8` rejects overlong forms and the surrogates U+D800..U+DFFF.
    let text = std::str::from_utf8(bytes).map_err(|_| Malformed::InvalidUtf8 { field })?;
    if text.as_bytes().contains(&0) {
        return Err(Malformed::NullCharacter { field }.into());
    }
    Ok(())
}

/// Encoded sizes of the §1.5 data types.
pub(crate) fn string_len(text: &MqttString) -> usize {
    2 + text.len()
}

pub(crate) fn binary_len(bytes: &[u8]) -> usize {
    2 + bytes.len()
}

pub(crate) fn user_property_len(property: &UserProperty) -> usize {
    string_len(&property.name) + string_len(&property.value)
}

/// Writing the §1.5 data types; length checks give [`EncodeError`].
pub(crate) fn put_binary(
    out: &mut BytesMut,
    bytes: &[u8],
    field: &'static str,
) -> Result<(), EncodeError> {
    let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::FieldTooLong {
        field,
        len: bytes.len(),
    })?;
    debug_assert!(bytes.len() <= MAX_STRING_LEN);
    out.put_u16(len);
    out.put_slice(bytes);
    Ok(())
}

pub(crate) fn put_string(
    out: &mut BytesMut,
    text: &MqttString,
    field: &'static str,
) -> Result<(), EncodeError> {
    put_binary(out, text.as_bytes(), field)
}

pub(crate) fn put_user_property(
    out: &mut BytesMut,
    property: &UserProperty,
) -> Result<(), EncodeError> {
    put_string(out, &property.name, "user property name")?;
    put_string(out, &property.value, "user property value")
}

pub(crate) fn put_variable_byte_integer_checked(
    out: &mut BytesMut,
    value: usize,
) -> Result<(), EncodeError> {
    if value > VARIABLE_BYTE_INTEGER_MAX as usize {
        return Err(EncodeError::PacketTooLarge { len: value });
    }
    put_variable_byte_integer(out, value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &'static [u8]) -> Reader {
        Reader::new(Bytes::from_static(bytes), PacketType::Publish)
    }

    #[test]
    fn string_rejects_invalid_utf8_mqtt_1_5_4_1() {
        let error = reader(b"\x00\x02\xC3\x28")
            .string("topic name")
            .unwrap_err();
        assert_eq!(
            error,
            Malformed::InvalidUtf8 {
                field: "topic name"
            }
            .into()
        );
    }

    #[test]
    fn string_rejects_surrogates_mqtt_1_5_4_1() {
        // U+D800 encoded in the CESU style.
        let error = reader(b"\x00\x03\xED\xA0\x80")
            .string("topic name")
            .unwrap_err();
        assert_eq!(
            error,
            Malformed::InvalidUtf8 {
                field: "topic name"
            }
            .into()
        );
    }

    #[test]
    fn string_rejects_nul_mqtt_1_5_4_2() {
        let error = reader(b"\x00\x03a\x00b").string("topic name").unwrap_err();
        assert_eq!(
            error,
            Malformed::NullCharacter {
                field: "topic name"
            }
            .into()
        );
    }

    #[test]
    fn string_shorter_than_its_length_is_malformed() {
        let error = reader(b"\x00\x05abc").string("topic name").unwrap_err();
        assert!(matches!(
            error,
            DecodeError::Malformed(Malformed::UnexpectedEnd { .. })
        ));
    }

    #[test]
    fn put_binary_refuses_65536_bytes() {
        let mut out = BytesMut::new();
        let error = put_binary(&mut out, &vec![0; 65_536], "payload").unwrap_err();
        assert_eq!(
            error,
            EncodeError::FieldTooLong {
                field: "payload",
                len: 65_536
            }
        );
    }
}
