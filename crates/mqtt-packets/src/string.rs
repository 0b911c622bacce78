//! UTF-8 Encoded Strings (§1.5.4) and UTF-8 String Pairs (§1.5.7) as zero-copy `Bytes`.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// The longest string or binary field: its length is a two-byte integer.
pub const MAX_STRING_LEN: usize = 65_535;

/// An MQTT UTF-8 Encoded String: valid UTF-8 without U+0000, at most 65,535 bytes.
///
/// The text is a `Bytes` slice of the buffer the packet was decoded from, so decoding does not
/// copy it, and cloning it only bumps a reference count. The invariant is checked once, when the
/// value is made; [`MqttString::as_str`] then reads it back without failing.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MqttString(Bytes);

/// Why a Rust string cannot be an [`MqttString`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidString {
    /// Longer than 65,535 bytes.
    #[error("string of {0} bytes is longer than 65535 bytes")]
    TooLong(usize),
    /// Contains U+0000 [MQTT-1.5.4-2].
    #[error("string contains U+0000 [MQTT-1.5.4-2]")]
    NullCharacter,
}

impl MqttString {
    /// Checks `text` and wraps it without copying.
    pub fn new(text: impl Into<String>) -> Result<Self, InvalidString> {
        let text: String = text.into();
        Self::check(&text)?;
        Ok(Self(Bytes::from(text)))
    }

    /// Wraps a string literal without copying.
    ///
    /// # Panics
    ///
    /// If `text` contains U+0000 or is longer than 65,535 bytes: a literal in the program, so a
    /// programming error (like `http::HeaderValue::from_static`). Use [`MqttString::new`] for
    /// anything that comes from outside.
    pub fn from_static(text: &'static str) -> Self {
        match Self::check(text) {
            Ok(()) => Self(Bytes::from_static(text.as_bytes())),
            #[allow(clippy::panic)]
            Err(error) => panic!("MqttString::from_static({text:?}): {error}"),
        }
    }

    fn check(text: &str) -> Result<(), InvalidString> {
        if text.len() > MAX_STRING_LEN {
            return Err(InvalidString::TooLong(text.len()));
        }
        if text.as_bytes().contains(&0) {
            return Err(InvalidString::NullCharacter);
        }
        Ok(())
    }

    /// Wraps bytes the decoder has already validated.
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        Self(bytes)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // The bytes were validated when the value was made, so this cannot fail; the fallback
        // keeps the crate free of both `unsafe` and panics.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The length in bytes (without re-reading the text as `str`).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The UTF-8 bytes, sharing the decoded buffer.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Returns the underlying bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for MqttString {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for MqttString {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for MqttString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MqttString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for MqttString {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for MqttString {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl TryFrom<&str> for MqttString {
    type Error = InvalidString;

    fn try_from(text: &str) -> Result<Self, InvalidString> {
        Self::new(text)
    }
}

impl TryFrom<String> for MqttString {
    type Error = InvalidString;

    fn try_from(text: String) -> Result<Self, InvalidString> {
        Self::new(text)
    }
}

/// A User Property (0x26): a name and a value, both UTF-8 strings [MQTT-1.5.7-1].
///
/// Names may repeat; lists of user properties keep the order of the packet [MQTT-3.3.2-18].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserProperty {
    /// The name.
    pub name: MqttString,
    /// The value.
    pub value: MqttString,
}

impl UserProperty {
    /// A user property from two strings.
    pub fn new(name: MqttString, value: MqttString) -> Self {
        Self { name, value }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_null_and_overlong() {
        assert_eq!(MqttString::new("a\0b"), Err(InvalidString::NullCharacter));
        assert_eq!(
            MqttString::new("x".repeat(65_536)),
            Err(InvalidString::TooLong(65_536))
        );
        assert!(MqttString::new("x".repeat(65_535)).is_ok());
    }

    #[test]
    fn keeps_bom_mqtt_1_5_4_3() {
        let text = MqttString::new("\u{FEFF}topic").unwrap();
        assert_eq!(text.as_bytes().as_ref(), b"\xEF\xBB\xBFtopic");
    }

    #[test]
    fn compares_with_str() {
        let text = MqttString::from_static("a/b");
        assert_eq!(text, "a/b");
        assert_eq!(&*text, "a/b");
        assert_eq!(format!("{text:?}"), "\"a/b\"");
    }
}
