//! The NetStream status a refused publisher or player is told before its connection closes:
//! `onStatus` with level `error` and a standard code (`NetStream.Publish.BadName`, ...), as
//! ffmpeg, OBS (librtmp) and Flash-era clients read it; and the `warning` a player is sent while
//! it keeps playing (a track it cannot be given).

use std::collections::HashMap;

use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::messages::RtmpMessage;
use rml_rtmp::rml_amf0::Amf0Value;
use rml_rtmp::time::RtmpTimestamp;

/// A status code and the human-readable reason sent with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: &'static str,
    pub description: String,
}

impl Status {
    /// The stream key (or token) is unknown, expired, not allowed to publish, or already live.
    pub fn bad_name(description: impl Into<String>) -> Status {
        Status { code: "NetStream.Publish.BadName", description: description.into() }
    }

    /// The requested peer or room cannot be played.
    pub fn stream_not_found(description: impl Into<String>) -> Status {
        Status { code: "NetStream.Play.StreamNotFound", description: description.into() }
    }

    /// Playback was refused (no token, bad token, no subscribe grant).
    pub fn play_failed(description: impl Into<String>) -> Status {
        Status { code: "NetStream.Play.Failed", description: description.into() }
    }

    /// Anything else that stops a stream: the server refused or ended it.
    pub fn failed(description: impl Into<String>) -> Status {
        Status { code: "NetStream.Failed", description: description.into() }
    }
}

/// The bytes of an error `onStatus` on `stream_id`, as the last message of a connection.
///
/// `rml_rtmp`'s `ServerSession` only sends `_error` results (level `_error`) and owns its chunk
/// serializer, so this message is serialized by a fresh one with a full (type 0) chunk header:
/// the peer decodes a type 0 header whatever it received before, and since nothing follows on
/// this connection, no later compressed header can be misread.
pub fn final_status_bytes(stream_id: u32, status: &Status) -> Option<Vec<u8>> {
    status_bytes(stream_id, status, "error")
}

/// The chunk stream a mid-stream warning goes on. `rml_rtmp` puts commands on chunk stream 6 and
/// compresses each header against its own previous one there; a message of ours on that stream
/// would become the peer's reference for rml's next header, so warnings use a stream rml never
/// writes (it uses 2 to 6).
const WARNING_CHUNK_STREAM: u8 = 9;

/// The bytes of a `warning` `onStatus` on `stream_id`, sent while the stream goes on (ffmpeg logs
/// it and keeps reading; only `error` ends its playback). `None` if it does not fit one chunk
/// (its chunk stream is rewritten in the basic header, which a continuation chunk repeats).
pub fn warning_status_bytes(stream_id: u32, status: &Status) -> Option<Vec<u8>> {
    let mut bytes = status_bytes(stream_id, status, "warning")?;
    // A type 0 basic header: 2 bits of format (0) and a one-byte chunk stream id.
    let header_len = 1 + 11;
    if bytes.len() > header_len + super::CHUNK_SIZE as usize || bytes.first()? >> 6 != 0 {
        return None;
    }
    bytes[0] = WARNING_CHUNK_STREAM;
    Some(bytes)
}

fn status_bytes(stream_id: u32, status: &Status, level: &str) -> Option<Vec<u8>> {
    let mut object = HashMap::new();
    object.insert("level".to_owned(), Amf0Value::Utf8String(level.to_owned()));
    object.insert("code".to_owned(), Amf0Value::Utf8String(status.code.to_owned()));
    object.insert("description".to_owned(), Amf0Value::Utf8String(status.description.clone()));
    let message = RtmpMessage::Amf0Command {
        command_name: "onStatus".to_owned(),
        transaction_id: 0.0,
        command_object: Amf0Value::Null,
        additional_arguments: vec![Amf0Value::Object(object)],
    };
    let payload = message.into_message_payload(RtmpTimestamp::new(0), stream_id).ok()?;
    let mut serializer = ChunkSerializer::new();
    // The peer was told this chunk size when the session started; the packet announcing it again
    // is not sent.
    serializer.set_max_chunk_size(super::CHUNK_SIZE, RtmpTimestamp::new(0)).ok()?;
    serializer.serialize(&payload, true, false).ok().map(|packet| packet.bytes)
}

#[cfg(test)]
mod tests {
    use rml_rtmp::chunk_io::ChunkDeserializer;

    use super::*;

    /// A mid-stream warning reads back, with a fresh chunk reader at our chunk size, as an
    /// `onStatus` of level `warning` on the play stream, carried on a chunk stream rml_rtmp's
    /// serializer never uses.
    #[test]
    fn a_warning_is_an_onstatus_of_level_warning_on_a_chunk_stream_of_its_own() {
        let status = Status::play_failed("video track TR_x (vp9) cannot be played: no transcoder");
        let bytes = warning_status_bytes(1, &status).expect("one chunk");
        assert_eq!(bytes[0], WARNING_CHUNK_STREAM, "format 0, chunk stream {WARNING_CHUNK_STREAM}");
        let mut reader = ChunkDeserializer::new();
        reader.set_max_chunk_size(super::super::CHUNK_SIZE as usize).unwrap();
        let payload = reader.get_next_message(&bytes).unwrap().expect("a whole message");
        assert_eq!(payload.message_stream_id, 1);
        let RtmpMessage::Amf0Command { command_name, additional_arguments, .. } = payload.to_rtmp_message().unwrap()
        else {
            panic!("not a command");
        };
        assert_eq!(command_name, "onStatus");
        let Some(Amf0Value::Object(object)) = additional_arguments.first() else { panic!("no info object") };
        assert_eq!(object.get("level"), Some(&Amf0Value::Utf8String("warning".into())));
        assert_eq!(object.get("code"), Some(&Amf0Value::Utf8String("NetStream.Play.Failed".into())));

        let long = Status::failed("x".repeat(super::super::CHUNK_SIZE as usize));
        assert_eq!(warning_status_bytes(1, &long), None, "more than a chunk is not sent");
    }
}
