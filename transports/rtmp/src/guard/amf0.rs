//! An iterative AMF0 scanner: walks a message's AMF0 values with an explicit stack and checks
//! them against [`AmfLimits`] (nesting depth, number of values, message size) without building
//! anything. `rml_amf0`, which `rml_rtmp` decodes commands and data with, recurses once per
//! nesting level: strict arrays nested 20 000 deep (100 KB) overflow a worker thread's stack and
//! abort the process. A message passes through it only once this scanner has accepted it.
//!
//! The grammar is `rml_amf0`'s own, so that what is checked is what it will decode: the values
//! it knows (number, boolean, string, object, null, undefined, ECMA array, strict array), an
//! object-end marker ending the value list at the top level and a strict array early, and a
//! strict array's count bounding its elements. Written by hand: no maintained crate decodes AMF0
//! with a depth bound, and this one only has to skip, not build.

/// What one AMF-bearing message may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmfLimits {
    /// Deepest nesting of objects and arrays.
    pub max_depth: usize,
    /// Values in one message, object properties and array elements included.
    pub max_values: usize,
    /// Bytes of one command, data or shared-object message.
    pub max_bytes: usize,
}

impl Default for AmfLimits {
    /// `onMetaData` from ffmpeg and OBS is a flat object of a few dozen values in under 1 KB;
    /// `connect` and `publish` are smaller still.
    fn default() -> Self {
        Self { max_depth: 32, max_values: 4096, max_bytes: 64 * 1024 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmfError {
    #[error("AMF message of {len} bytes, the limit is {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("AMF0 values nested more than {limit} deep")]
    TooDeep { limit: usize },
    #[error("more than {limit} AMF0 values in one message")]
    TooManyValues { limit: usize },
    #[error("AMF0 value truncated at byte {offset}")]
    Truncated { offset: usize },
    #[error("AMF0 marker 0x{marker:02x} at byte {offset} is not one the server decodes")]
    UnknownMarker { marker: u8, offset: usize },
    #[error("AMF0 object property without a value at byte {offset}")]
    PropertyWithoutValue { offset: usize },
    #[error("AMF0 object has an empty property name not followed by the object end at byte {offset}")]
    BadObjectEnd { offset: usize },
}

const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0a;

/// An open container: what the bytes that follow belong to.
enum Open {
    /// A strict array with this many elements still to come.
    Array { remaining: u32 },
    /// An object or ECMA array: (name, value) properties until an empty name and the end marker.
    Object,
}

struct Scanner<'a> {
    data: &'a [u8],
    pos: usize,
    values: usize,
    stack: Vec<Open>,
    limits: AmfLimits,
}

/// Checks that `data`, a sequence of AMF0 values, stays within `limits`.
pub fn scan(data: &[u8], limits: &AmfLimits) -> Result<(), AmfError> {
    if data.len() > limits.max_bytes {
        return Err(AmfError::TooLarge { len: data.len(), limit: limits.max_bytes });
    }
    let mut scanner = Scanner { data, pos: 0, values: 0, stack: Vec::new(), limits: *limits };
    scanner.run()
}

impl Scanner<'_> {
    fn run(&mut self) -> Result<(), AmfError> {
        loop {
            match self.stack.last_mut() {
                None => match self.marker() {
                    // rml_amf0 stops at the end of the data or at an object-end marker.
                    None | Some(OBJECT_END) => return Ok(()),
                    Some(marker) => self.value(marker)?,
                },
                Some(Open::Array { remaining: 0 }) => {
                    self.stack.pop();
                }
                Some(Open::Array { remaining }) => {
                    *remaining -= 1;
                    match self.marker() {
                        // The end of the data or an object-end marker ends the array early.
                        None | Some(OBJECT_END) => {
                            self.stack.pop();
                        }
                        Some(marker) => self.value(marker)?,
                    }
                }
                Some(Open::Object) => {
                    let name_len = usize::from(self.u16()?);
                    if name_len == 0 {
                        let at = self.pos;
                        if self.u8()? != OBJECT_END {
                            return Err(AmfError::BadObjectEnd { offset: at });
                        }
                        self.stack.pop();
                        continue;
                    }
                    self.skip(name_len)?;
                    let at = self.pos;
                    match self.marker() {
                        None | Some(OBJECT_END) => return Err(AmfError::PropertyWithoutValue { offset: at }),
                        Some(marker) => self.value(marker)?,
                    }
                }
            }
        }
    }

    /// The next marker byte, if any data is left.
    fn marker(&mut self) -> Option<u8> {
        let marker = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(marker)
    }

    /// Skips the value that `marker` (just read) starts, opening a container if it is one.
    fn value(&mut self, marker: u8) -> Result<(), AmfError> {
        self.values += 1;
        if self.values > self.limits.max_values {
            return Err(AmfError::TooManyValues { limit: self.limits.max_values });
        }
        match marker {
            NUMBER => self.skip(8),
            BOOLEAN => self.skip(1),
            NULL | UNDEFINED => Ok(()),
            STRING => {
                let len = usize::from(self.u16()?);
                self.skip(len)
            }
            OBJECT => self.open(Open::Object),
            ECMA_ARRAY => {
                // The count is ignored by rml_amf0 (and by players): properties run to the end
                // marker, as in an object.
                self.skip(4)?;
                self.open(Open::Object)
            }
            STRICT_ARRAY => {
                let remaining = self.u32()?;
                self.open(Open::Array { remaining })
            }
            other => Err(AmfError::UnknownMarker { marker: other, offset: self.pos - 1 }),
        }
    }

    fn open(&mut self, container: Open) -> Result<(), AmfError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(AmfError::TooDeep { limit: self.limits.max_depth });
        }
        self.stack.push(container);
        Ok(())
    }

    fn skip(&mut self, len: usize) -> Result<(), AmfError> {
        let end = self.pos.checked_add(len).filter(|end| *end <= self.data.len());
        match end {
            Some(end) => {
                self.pos = end;
                Ok(())
            }
            None => Err(AmfError::Truncated { offset: self.pos }),
        }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], AmfError> {
        let bytes: [u8; N] = self
            .data
            .get(self.pos..)
            .and_then(|rest| rest.first_chunk::<N>())
            .copied()
            .ok_or(AmfError::Truncated { offset: self.pos })?;
        self.pos += N;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, AmfError> {
        Ok(self.take::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, AmfError> {
        Ok(u16::from_be_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, AmfError> {
        Ok(u32::from_be_bytes(self.take()?))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rml_rtmp::rml_amf0::{self, Amf0Value};

    use super::*;

    fn limits() -> AmfLimits {
        AmfLimits::default()
    }

    fn encode(values: &[Amf0Value]) -> Vec<u8> {
        rml_amf0::serialize(&values.to_vec()).unwrap()
    }

    #[test]
    fn what_encoders_send_passes() {
        let mut metadata = HashMap::new();
        for (key, value) in [("width", 1280.0), ("height", 720.0), ("framerate", 30.0), ("audiosamplerate", 48000.0)] {
            metadata.insert(key.to_owned(), Amf0Value::Number(value));
        }
        metadata.insert("encoder".to_owned(), Amf0Value::Utf8String("Lavf59.27.100".into()));
        metadata.insert("stereo".to_owned(), Amf0Value::Boolean(true));
        let set_data_frame = encode(&[
            Amf0Value::Utf8String("@setDataFrame".into()),
            Amf0Value::Utf8String("onMetaData".into()),
            Amf0Value::Object(metadata),
        ]);
        assert_eq!(scan(&set_data_frame, &limits()), Ok(()));
        let publish = encode(&[
            Amf0Value::Utf8String("publish".into()),
            Amf0Value::Number(5.0),
            Amf0Value::Null,
            Amf0Value::Utf8String("key".into()),
            Amf0Value::Utf8String("live".into()),
            Amf0Value::StrictArray(vec![Amf0Value::Undefined, Amf0Value::Number(1.0)]),
        ]);
        assert_eq!(scan(&publish, &limits()), Ok(()));
        // An ECMA array, as ffmpeg writes onMetaData.
        let mut ecma = vec![ECMA_ARRAY, 0, 0, 0, 1, 0, 1, b'w', NUMBER];
        ecma.extend(640f64.to_be_bytes());
        ecma.extend([0, 0, OBJECT_END]);
        assert_eq!(scan(&ecma, &limits()), Ok(()));
    }

    #[test]
    fn the_issue_bomb_is_refused_at_the_depth_limit() {
        let bomb: Vec<u8> = [STRICT_ARRAY, 0, 0, 0, 1].repeat(20_000);
        assert_eq!(scan(&bomb, &AmfLimits { max_bytes: 1 << 20, ..limits() }), Err(AmfError::TooDeep { limit: 32 }));
        assert_eq!(scan(&bomb, &limits()), Err(AmfError::TooLarge { len: 100_000, limit: 64 * 1024 }));
        // Objects nest the same way.
        let objects: Vec<u8> = [OBJECT, 0, 1, b'a'].repeat(100);
        assert_eq!(scan(&objects, &limits()), Err(AmfError::TooDeep { limit: 32 }));
        // 32 levels are fine, 33 are not.
        let mut nested = [STRICT_ARRAY, 0, 0, 0, 1].repeat(32);
        nested.push(NULL);
        assert_eq!(scan(&nested, &limits()), Ok(()));
        let mut deeper = [STRICT_ARRAY, 0, 0, 0, 1].repeat(33);
        deeper.push(NULL);
        assert_eq!(scan(&deeper, &limits()), Err(AmfError::TooDeep { limit: 32 }));
    }

    #[test]
    fn counts_and_truncation_are_checked() {
        let many = vec![NULL; 5000];
        assert_eq!(scan(&many, &limits()), Err(AmfError::TooManyValues { limit: 4096 }));
        assert_eq!(scan(&[STRING, 0, 10, b'a'], &limits()), Err(AmfError::Truncated { offset: 3 }));
        assert_eq!(scan(&[NUMBER, 1, 2], &limits()), Err(AmfError::Truncated { offset: 1 }));
        assert_eq!(scan(&[0x0b, 0, 0], &limits()), Err(AmfError::UnknownMarker { marker: 0x0b, offset: 0 }));
        assert_eq!(scan(&[OBJECT, 0, 1, b'a'], &limits()), Err(AmfError::PropertyWithoutValue { offset: 4 }));
        assert_eq!(scan(&[OBJECT, 0, 0, NULL], &limits()), Err(AmfError::BadObjectEnd { offset: 3 }));
        assert_eq!(scan(&[OBJECT, 0, 0], &limits()), Err(AmfError::Truncated { offset: 3 }));
    }

    #[test]
    fn follows_rml_amf0_where_its_grammar_is_loose() {
        // A strict array claiming more elements than follow ends at the end of the data...
        assert_eq!(scan(&[STRICT_ARRAY, 0xff, 0xff, 0xff, 0xff, NULL], &limits()), Ok(()));
        // ... or at an object-end marker, and the values after it belong to the parent.
        assert_eq!(scan(&[STRICT_ARRAY, 0, 0, 0, 9, NULL, OBJECT_END, NULL], &limits()), Ok(()));
        // At the top level an object-end marker ends the message: nothing after it is decoded.
        assert_eq!(scan(&[NULL, OBJECT_END, 0xee, 0xee], &limits()), Ok(()));
        // The same inputs decode in rml_amf0.
        for input in [&[STRICT_ARRAY, 0xff, 0xff, 0xff, 0xff, NULL][..], &[NULL, OBJECT_END, 0xee, 0xee]] {
            assert!(rml_amf0::deserialize(&mut std::io::Cursor::new(input)).is_ok());
        }
    }
}
