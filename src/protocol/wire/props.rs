//! Message properties in server frames, borrowed when encoding and boxed when decoding.

use crate::message::Properties;
use serde::{Deserialize, Serialize};

/// A message's properties in a frame the broker sends: borrowed from the message when
/// the broker encodes, boxed when a client decodes; a pointer either way, where a
/// `Cow<Properties>` holds ~300 bytes inline in every frame moved around. On the wire,
/// exactly the properties.
#[derive(Debug, Clone)]
pub enum PropertiesRef<'a> {
    /// The message's own (encoding).
    Borrowed(&'a Properties),
    /// Decoded.
    Owned(Box<Properties>),
}

impl PropertiesRef<'_> {
    /// The properties, owned.
    pub fn into_owned(self) -> Properties {
        match self {
            PropertiesRef::Borrowed(p) => p.clone(),
            PropertiesRef::Owned(p) => *p,
        }
    }
}

impl std::ops::Deref for PropertiesRef<'_> {
    type Target = Properties;

    fn deref(&self) -> &Properties {
        match self {
            PropertiesRef::Borrowed(p) => p,
            PropertiesRef::Owned(p) => p,
        }
    }
}

impl PartialEq for PropertiesRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Serialize for PropertiesRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for PropertiesRef<'_> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Properties::deserialize(d).map(|p| PropertiesRef::Owned(Box::new(p)))
    }
}

/// `None` for default (empty) properties, which then travel as a single nil byte.
pub fn properties_or_none(p: &Properties) -> Option<PropertiesRef<'_>> {
    if p.content_type.is_none()
        && p.headers.is_none()
        && p.delivery_mode.is_none()
        && p.message_id.is_none()
        && *p == Properties::default()
    {
        None
    } else {
        Some(PropertiesRef::Borrowed(p))
    }
}
