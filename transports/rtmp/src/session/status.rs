//! The NetStream status a refused publisher or player is told before its connection closes:
//! `onStatus` with level `error` and a standard code (`NetStream.Publish.BadName`, ...), as
//! ffmpeg, OBS (librtmp) and Flash-era clients read it.

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
    let mut object = HashMap::new();
    object.insert("level".to_owned(), Amf0Value::Utf8String("error".to_owned()));
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
