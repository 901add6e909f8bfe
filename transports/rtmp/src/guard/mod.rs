//! The message guard: what a client sends is checked message by message before `rml_rtmp`'s
//! `ServerSession` sees any of it, because that session decodes AMF0 with a recursive decoder
//! (see [`amf0`]) and a stack overflow cannot be caught.
//!
//! The guard reads the same bytes with a shadow `rml_rtmp::chunk_io::ChunkDeserializer` — the
//! very reader the `ServerSession` uses, so message boundaries, chunk headers, extended
//! timestamps and interleaved chunk streams are found exactly as it will find them — and
//! mirrors the one input that changes how later bytes are read: the client's Set Chunk Size.
//! (Abort messages change nothing in `rml_rtmp`'s reader, so nothing in the shadow either.)
//! Every complete AMF-bearing message is scanned: commands (types 20 and 17), data (18, 15);
//! shared-object messages (19, 16), which nothing in the server decodes, are held to the size
//! limit only. The caller hands the bytes on only when every message completed in them passed;
//! a message still incomplete is checked once its last chunk arrives, before it is handed on.
//!
//! The cost is a second chunk parse and a copy of each message's payload; see the `guard`
//! criterion benchmark.

pub mod amf0;

use std::panic::{AssertUnwindSafe, catch_unwind};

use rml_rtmp::chunk_io::ChunkDeserializer;
use rml_rtmp::messages::{MessagePayload, RtmpMessage};

pub use amf0::{AmfError, AmfLimits};

/// RTMP message type ids.
const SET_CHUNK_SIZE: u8 = 1;
const AMF3_DATA: u8 = 15;
const AMF3_SHARED_OBJECT: u8 = 16;
const AMF3_COMMAND: u8 = 17;
const AMF0_DATA: u8 = 18;
const AMF0_SHARED_OBJECT: u8 = 19;
const AMF0_COMMAND: u8 = 20;

/// Why the guard stopped a client's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("RTMP message type {type_id}: {source}")]
    Amf { type_id: u8, source: AmfError },
    #[error("malformed RTMP chunk stream: {0}")]
    Chunks(String),
}

/// Checks a client's byte stream message by message; see the module docs.
pub struct MessageGuard {
    chunks: ChunkDeserializer,
    limits: AmfLimits,
}

impl MessageGuard {
    pub fn new(limits: AmfLimits) -> Self {
        Self { chunks: ChunkDeserializer::new(), limits }
    }

    /// Reads `bytes` (the next bytes of the stream after the handshake) and checks every
    /// message they complete. `Ok` means they may be handed to the `ServerSession`.
    pub fn check(&mut self, bytes: &[u8]) -> Result<(), GuardError> {
        let mut input = bytes;
        loop {
            let next = catch_unwind(AssertUnwindSafe(|| self.chunks.get_next_message(input)));
            input = &[];
            let message = match next {
                Ok(Ok(Some(message))) => message,
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(err)) => return Err(GuardError::Chunks(err.to_string())),
                Err(_) => return Err(GuardError::Chunks("the chunk reader panicked".into())),
            };
            self.inspect(&message)?;
        }
    }

    fn inspect(&mut self, message: &MessagePayload) -> Result<(), GuardError> {
        let amf = |source| GuardError::Amf { type_id: message.type_id, source };
        let data = &message.data[..];
        match message.type_id {
            SET_CHUNK_SIZE => {
                // As the ServerSession does: its reader takes the new size before the next message.
                if let Ok(RtmpMessage::SetChunkSize { size }) = message.to_rtmp_message() {
                    if size == 0 {
                        return Err(GuardError::Chunks("Set Chunk Size of 0".into()));
                    }
                    self.chunks.set_max_chunk_size(size as usize).map_err(|err| GuardError::Chunks(err.to_string()))?;
                }
                Ok(())
            }
            AMF0_COMMAND | AMF0_DATA | AMF3_DATA => amf0::scan(data, &self.limits).map_err(amf),
            // rml_rtmp reads "AMF3" commands as AMF0 after a leading zero byte, as Flash sends them.
            AMF3_COMMAND => {
                let body = match data.first() {
                    Some(0) => &data[1..],
                    _ => data,
                };
                amf0::scan(body, &self.limits).map_err(amf)
            }
            AMF0_SHARED_OBJECT | AMF3_SHARED_OBJECT if data.len() > self.limits.max_bytes => {
                Err(amf(AmfError::TooLarge { len: data.len(), limit: self.limits.max_bytes }))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rml_rtmp::chunk_io::ChunkSerializer;
    use rml_rtmp::time::RtmpTimestamp;

    use super::*;

    fn payload(type_id: u8, data: Vec<u8>) -> MessagePayload {
        MessagePayload { timestamp: RtmpTimestamp::new(0), type_id, message_stream_id: 0, data: Bytes::from(data) }
    }

    fn bomb() -> Vec<u8> {
        [0x0a, 0, 0, 0, 1].repeat(20_000)
    }

    #[test]
    fn the_issue_bomb_in_128_byte_chunks_is_stopped_when_its_last_chunk_arrives() {
        let mut serializer = ChunkSerializer::new();
        let bytes = serializer.serialize(&payload(AMF0_COMMAND, bomb()), false, false).unwrap().bytes;
        let mut guard = MessageGuard::new(AmfLimits::default());
        let (head, tail) = bytes.split_at(bytes.len() - 10);
        assert_eq!(guard.check(head), Ok(()), "nothing complete yet");
        let err = guard.check(tail).unwrap_err();
        assert!(matches!(err, GuardError::Amf { type_id: 20, source: AmfError::TooLarge { .. } }), "{err}");
        // 3 000 levels in 15 KB: under the size limit, caught by the depth limit.
        let deep_but_small = [0x0a, 0, 0, 0, 1].repeat(3000);
        let bytes =
            ChunkSerializer::new().serialize(&payload(AMF3_COMMAND, deep_but_small), false, false).unwrap().bytes;
        let err = MessageGuard::new(AmfLimits::default()).check(&bytes).unwrap_err();
        assert!(matches!(err, GuardError::Amf { type_id: 17, source: AmfError::TooDeep { .. } }), "{err}");
    }

    #[test]
    fn follows_chunk_size_changes_and_lets_media_through() {
        let mut serializer = ChunkSerializer::new();
        let mut bytes = Vec::new();
        // The client announces 4096-byte chunks, then sends media and a small command in them.
        let announce = serializer.set_max_chunk_size(4096, RtmpTimestamp::new(0)).unwrap();
        bytes.extend(announce.bytes);
        bytes.extend(serializer.serialize(&payload(9, vec![0x17; 10_000]), false, false).unwrap().bytes);
        let command = rml_rtmp::rml_amf0::serialize(&vec![
            rml_rtmp::rml_amf0::Amf0Value::Utf8String("FCPublish".into()),
            rml_rtmp::rml_amf0::Amf0Value::Number(3.0),
            rml_rtmp::rml_amf0::Amf0Value::Null,
        ])
        .unwrap();
        bytes.extend(serializer.serialize(&payload(AMF0_COMMAND, command), false, false).unwrap().bytes);
        let mut guard = MessageGuard::new(AmfLimits::default());
        // Fed in odd pieces, as TCP delivers them.
        for piece in bytes.chunks(777) {
            assert_eq!(guard.check(piece), Ok(()));
        }
        // A bomb after the chunk size change is still found.
        let deep = [0x03, 0, 1, b'a'].repeat(40);
        let bytes = serializer.serialize(&payload(AMF0_DATA, deep), false, false).unwrap().bytes;
        assert!(matches!(guard.check(&bytes), Err(GuardError::Amf { type_id: 18, .. })));
    }

    #[test]
    fn a_broken_chunk_stream_is_an_error() {
        // A type 1 header on a chunk stream that never had a type 0 one.
        let err = MessageGuard::new(AmfLimits::default()).check(&[0x43, 0, 0, 0, 0, 0, 5, 20]).unwrap_err();
        assert!(matches!(err, GuardError::Chunks(_)), "{err}");
    }
}
