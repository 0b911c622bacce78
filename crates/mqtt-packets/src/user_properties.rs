//! The User Properties (0x26) of one packet: one shared, immutable list.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use crate::{MqttString, UserProperty};

/// The User Properties of a packet, in packet order [MQTT-3.3.2-18].
///
/// Behaves as a slice of [`UserProperty`] (it dereferences to one), but clones by reference
/// count: a message forwarded to many subscribers, queued or stored, shares one list instead of
/// copying it. An empty list allocates nothing. Build one from a `Vec` (`.into()`), an iterator,
/// or [`UserProperties::push`]; [`UserProperties::compact`] gives a copy whose strings live in one
/// owned buffer, for lists kept long after the packet that carried them.
///
/// ```
/// use mqtt_packets::{MqttString, UserProperties, UserProperty};
///
/// let mut properties = UserProperties::default();
/// properties.push(UserProperty::new(
///     MqttString::from_static("unit"),
///     MqttString::from_static("°C"),
/// ));
/// let shared = properties.clone(); // no copy of the list
/// assert_eq!(shared.len(), 1);
/// assert_eq!(shared[0].name, "unit");
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct UserProperties(Option<Arc<[UserProperty]>>);

impl UserProperties {
    /// An empty list.
    pub const fn new() -> Self {
        Self(None)
    }

    /// Appends a property. The list is copied when it is shared (as `Arc::make_mut` would), so
    /// build lists before sharing them.
    pub fn push(&mut self, property: UserProperty) {
        let mut list: Vec<UserProperty> = self.iter().cloned().collect();
        list.push(property);
        *self = list.into();
    }

    /// The encoded size of the properties (identifier byte, name and value of each).
    pub fn encoded_len(&self) -> usize {
        self.iter()
            .map(|property| 5 + property.name.len() + property.value.len())
            .sum()
    }

    /// Bytes of memory the list keeps alive when it is [compact](UserProperties::compact): its
    /// entries and the text of its names and values.
    pub fn heap_size(&self) -> usize {
        self.iter()
            .map(|property| {
                std::mem::size_of::<UserProperty>() + property.name.len() + property.value.len()
            })
            .sum()
    }

    /// A copy whose names and values are slices of one buffer of its own, instead of the
    /// buffers of the packet they were decoded from (which a slice keeps alive whole).
    pub fn compact(&self) -> Self {
        if self.is_empty() {
            return Self::new();
        }
        let text: usize = self
            .iter()
            .map(|property| property.name.len() + property.value.len())
            .sum();
        let mut block = BytesMut::with_capacity(text);
        for property in self.iter() {
            block.put_slice(property.name.as_bytes());
            block.put_slice(property.value.as_bytes());
        }
        let block = block.freeze();
        let mut at = 0;
        let mut take = |len: usize| {
            let string = MqttString::from_validated(block.slice(at..at + len));
            at += len;
            string
        };
        self.iter()
            .map(|property| {
                let name = take(property.name.len());
                let value = take(property.value.len());
                UserProperty::new(name, value)
            })
            .collect()
    }
}

impl Deref for UserProperties {
    type Target = [UserProperty];

    fn deref(&self) -> &[UserProperty] {
        self.0.as_deref().unwrap_or(&[])
    }
}

impl fmt::Debug for UserProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl From<Vec<UserProperty>> for UserProperties {
    fn from(list: Vec<UserProperty>) -> Self {
        if list.is_empty() {
            Self(None)
        } else {
            Self(Some(list.into()))
        }
    }
}

impl FromIterator<UserProperty> for UserProperties {
    fn from_iter<I: IntoIterator<Item = UserProperty>>(iter: I) -> Self {
        iter.into_iter().collect::<Vec<_>>().into()
    }
}

impl<'a> IntoIterator for &'a UserProperties {
    type Item = &'a UserProperty;
    type IntoIter = std::slice::Iter<'a, UserProperty>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl PartialEq<Vec<UserProperty>> for UserProperties {
    fn eq(&self, other: &Vec<UserProperty>) -> bool {
        **self == **other
    }
}

impl PartialEq<[UserProperty]> for UserProperties {
    fn eq(&self, other: &[UserProperty]) -> bool {
        **self == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn property(name: &'static str, value: &'static str) -> UserProperty {
        UserProperty::new(
            MqttString::from_static(name),
            MqttString::from_static(value),
        )
    }

    #[test]
    fn clones_share_the_list() {
        let list: UserProperties = vec![property("a", "1"), property("b", "2")].into();
        let copy = list.clone();
        assert!(std::ptr::eq(list.as_ptr(), copy.as_ptr()));
        assert_eq!(copy, vec![property("a", "1"), property("b", "2")]);
    }

    #[test]
    fn compact_keeps_order_and_content_in_one_buffer() {
        let list: UserProperties = vec![property("a", "1"), property("bc", "23")].into();
        let compact = list.compact();
        assert_eq!(compact, list);
        // Every string is a slice of the same block.
        let start = compact[0].name.as_bytes().as_ptr();
        assert_eq!(compact[1].value.as_bytes().as_ptr(), start.wrapping_add(4));
        assert_eq!(list.encoded_len(), 2 * 5 + 6);
    }

    #[test]
    fn empty_lists_are_equal_however_built() {
        assert_eq!(UserProperties::new(), UserProperties::from(Vec::new()));
        assert!(UserProperties::default().is_empty());
        let mut list = UserProperties::new();
        list.push(property("x", "y"));
        assert_eq!(list.len(), 1);
    }
}
