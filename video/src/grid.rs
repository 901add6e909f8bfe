//! The grid composition room outputs use (HLS and recordings, `"layout": "grid"`): every video
//! source decoded, fitted into its tile of one picture, and the picture encoded as H.264, one
//! picture per call of [`Grid::compose`] (the caller owns the clock). Sources take the tiles in
//! the order they were added, as many columns as the square root of their number rounded up;
//! a picture keeps its aspect ratio inside its tile, centred on black. A source's latest picture
//! stays on screen until the next one, so a source that sends fewer pictures than the grid's
//! frame rate (or stalls) freezes in its tile instead of holding the others back. Decoding,
//! scaling and encoding are libavcodec's and libswscale's (see [`crate::codec`]); the layout
//! and the plane copies are the only things written here.

use ff::format::Pixel;
use ffmpeg_next as ff;
use junction_core::Codec;

use crate::codec::{Decoder, Encoded, Encoder, EncoderSettings, Scaler, VideoError, bitrate_for};

/// Sources one grid composes (a 4 x 4 grid); a room with more publishers shows 16 of them.
pub const MAX_SOURCES: usize = 16;

/// A rectangle of the picture, in pixels; all four values are even (4:2:0 chroma).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// What a grid is opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridSettings {
    pub width: u32,
    pub height: u32,
    /// Pictures per second the caller composes (rate control plans for it).
    pub fps: u32,
    /// Pictures between keyframes.
    pub keyframe_interval: u32,
}

/// The tiles of `count` sources on a `width` x `height` picture: `ceil(sqrt(count))` columns,
/// as many rows as needed, left to right then top to bottom, each tile rounded down to even
/// sides.
pub fn tiles(count: usize, width: u32, height: u32) -> Vec<Rect> {
    if count == 0 {
        return Vec::new();
    }
    let columns = (1..=count).find(|c| c * c >= count).unwrap_or(count) as u32;
    let rows = (count as u32).div_ceil(columns);
    let (tile_width, tile_height) = ((width / columns) & !1, (height / rows) & !1);
    (0..count as u32)
        .map(|i| Rect {
            x: (i % columns) * tile_width,
            y: (i / columns) * tile_height,
            width: tile_width,
            height: tile_height,
        })
        .collect()
}

/// A `width` x `height` picture fitted inside `tile`, aspect ratio kept, centred, even sides.
pub fn fit(tile: Rect, width: u32, height: u32) -> Rect {
    let (fitted_width, fitted_height) = crate::codec::fitted_size(width, height, tile.width, tile.height);
    let (fitted_width, fitted_height) = if width < tile.width && height < tile.height {
        // Smaller pictures are scaled up to fill the tile too.
        let scale = f64::min(f64::from(tile.width) / f64::from(width), f64::from(tile.height) / f64::from(height));
        ((((f64::from(width) * scale) as u32) & !1).max(2), (((f64::from(height) * scale) as u32) & !1).max(2))
    } else {
        (fitted_width, fitted_height)
    };
    Rect {
        x: tile.x + ((tile.width.saturating_sub(fitted_width) / 2) & !1),
        y: tile.y + ((tile.height.saturating_sub(fitted_height) / 2) & !1),
        width: fitted_width,
        height: fitted_height,
    }
}

/// What feeding a source's frame did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// Decoded (or waiting in the decoder).
    Decoded,
    /// The source needs a keyframe before it can be decoded (it has not sent one yet, or its
    /// decoder lost its place and waits for one): ask its publisher.
    NeedsKeyframe,
}

struct Source<K> {
    key: K,
    decoder: Decoder,
    /// Whether the decoder has a keyframe to decode from.
    synced: bool,
    /// The latest decoded picture.
    picture: Option<ff::frame::Video>,
    /// The latest picture scaled into its place, and that place.
    placed: Option<(Rect, ff::frame::Video)>,
    /// Whether `placed` is on the canvas.
    pasted: bool,
    scaler: Scaler,
    decoded: Vec<ff::frame::Video>,
}

/// A grid: its sources, the picture they are composed into, and its encoder.
pub struct Grid<K> {
    settings: GridSettings,
    sources: Vec<Source<K>>,
    canvas: ff::frame::Video,
    /// Where the pictures on the canvas are.
    painted: Vec<Rect>,
    encoder: Encoder,
    sequence: i64,
    packets: Vec<Encoded>,
}

// SAFETY: the libav contexts and frames a grid owns have no thread affinity; a grid is used by
// one thread at a time (every method takes `&mut self`).
unsafe impl<K: Send> Send for Grid<K> {}

impl<K: PartialEq> Grid<K> {
    pub fn new(settings: GridSettings) -> Result<Self, VideoError> {
        let GridSettings { width, height, fps, keyframe_interval } = settings;
        let side = 16..=crate::codec::MAX_INPUT_SIDE;
        if !side.contains(&width) || !side.contains(&height) || width % 2 == 1 || height % 2 == 1 {
            return Err(VideoError::PictureSize { width, height, max: crate::codec::MAX_INPUT_SIDE });
        }
        let bitrate_bps = bitrate_for(width, height);
        let encoder =
            Encoder::new(Codec::H264, EncoderSettings { width, height, bitrate_bps, fps, keyframe_interval })?;
        let mut canvas = ff::frame::Video::new(Pixel::YUV420P, width, height);
        blacken(&mut canvas);
        Ok(Self {
            settings,
            sources: Vec::new(),
            canvas,
            painted: Vec::new(),
            encoder,
            sequence: 0,
            packets: Vec::new(),
        })
    }

    pub fn settings(&self) -> GridSettings {
        self.settings
    }

    /// Sources being composed.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Adds a source sending `codec` (false when the grid is full or already has it).
    pub fn add(&mut self, key: K, codec: Codec) -> Result<bool, VideoError> {
        if self.sources.len() >= MAX_SOURCES || self.sources.iter().any(|s| s.key == key) {
            return Ok(false);
        }
        let decoder = Decoder::new(codec)?;
        self.sources.push(Source {
            key,
            decoder,
            synced: false,
            picture: None,
            placed: None,
            pasted: false,
            scaler: Scaler::default(),
            decoded: Vec::new(),
        });
        Ok(true)
    }

    /// Removes a source; the others move up a tile.
    pub fn remove(&mut self, key: &K) {
        self.sources.retain(|s| s.key != *key);
    }

    /// Decodes one frame of source `key` (ignored for an unknown source). A frame that does
    /// not decode puts the source back to waiting for a keyframe; its last picture stays.
    pub fn feed(&mut self, key: &K, payload: &[u8], keyframe: bool) -> Fed {
        let Some(source) = self.sources.iter_mut().find(|s| s.key == *key) else { return Fed::Decoded };
        if !source.synced && !keyframe {
            return Fed::NeedsKeyframe;
        }
        source.synced = true;
        source.decoded.clear();
        if source.decoder.decode(payload, 0, &mut source.decoded).is_err() {
            source.synced = false;
            return Fed::NeedsKeyframe;
        }
        if let Some(picture) = source.decoded.pop() {
            source.picture = Some(picture);
            source.placed = None;
        }
        Fed::Decoded
    }

    /// Composes every source's latest picture and encodes it (a keyframe when `keyframe`, and
    /// every `keyframe_interval` pictures); the packet, if the encoder gave one.
    pub fn compose(&mut self, keyframe: bool) -> Result<Option<Encoded>, VideoError> {
        let GridSettings { width, height, .. } = self.settings;
        let showing: Vec<&mut Source<K>> = self.sources.iter_mut().filter(|s| s.picture.is_some()).collect();
        let places: Vec<Rect> = showing
            .iter()
            .zip(tiles(showing.len(), width, height))
            .filter_map(|(source, tile)| source.picture.as_ref().map(|p| fit(tile, p.width(), p.height())))
            .collect();
        // The canvas keeps what was pasted: it is cleared only when the places change, and a
        // picture is pasted again only when it is new.
        let repaint = places != self.painted;
        if repaint {
            blacken(&mut self.canvas);
            self.painted.clone_from(&places);
        }
        for (source, place) in showing.into_iter().zip(places) {
            let Some(picture) = &source.picture else { continue };
            if source.placed.as_ref().is_none_or(|(at, _)| *at != place) {
                let scaled = source.scaler.scale_copy(picture, place.width, place.height)?;
                source.placed = Some((place, scaled));
                source.pasted = false;
            }
            if let Some((place, scaled)) = &source.placed
                && (repaint || !source.pasted)
            {
                paste(&mut self.canvas, scaled, *place);
                source.pasted = true;
            }
        }
        self.packets.clear();
        let sequence = self.sequence;
        self.sequence += 1;
        self.encoder.encode(&mut self.canvas, sequence, keyframe, &mut self.packets)?;
        Ok(self.packets.pop())
    }
}

/// Black in limited-range YUV: luma 16, chroma 128.
fn blacken(picture: &mut ff::frame::Video) {
    picture.data_mut(0).fill(16);
    picture.data_mut(1).fill(128);
    picture.data_mut(2).fill(128);
}

/// Copies a YUV 4:2:0 `picture` (of `place`'s size) into `canvas` at `place`.
fn paste(canvas: &mut ff::frame::Video, picture: &ff::frame::Video, place: Rect) {
    for plane in 0..3 {
        let shift = u32::from(plane > 0);
        let (x, y) = ((place.x >> shift) as usize, (place.y >> shift) as usize);
        let (width, rows) = ((place.width >> shift) as usize, (place.height >> shift) as usize);
        let (from_stride, to_stride) = (picture.stride(plane), canvas.stride(plane));
        let from = picture.data(plane);
        let to = canvas.data_mut(plane);
        for row in 0..rows {
            let source = from.get(row * from_stride..row * from_stride + width);
            let target = to.get_mut((y + row) * to_stride + x..(y + row) * to_stride + x + width);
            if let (Some(source), Some(target)) = (source, target) {
                target.copy_from_slice(source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Decoder, can_encode};

    #[test]
    fn tiles_fill_rows_then_columns_and_pictures_keep_their_shape() {
        assert_eq!(tiles(1, 1280, 720), vec![Rect { x: 0, y: 0, width: 1280, height: 720 }]);
        assert_eq!(
            tiles(2, 1280, 720),
            vec![Rect { x: 0, y: 0, width: 640, height: 720 }, Rect { x: 640, y: 0, width: 640, height: 720 }]
        );
        let three = tiles(3, 1280, 720);
        assert_eq!(three.len(), 3);
        assert_eq!(three[2], Rect { x: 0, y: 360, width: 640, height: 360 });
        assert_eq!(tiles(5, 1280, 720)[4], Rect { x: 426, y: 360, width: 426, height: 360 });
        // 16:9 into a tall tile: letterboxed, centred.
        let tile = Rect { x: 640, y: 0, width: 640, height: 720 };
        assert_eq!(fit(tile, 1280, 720), Rect { x: 640, y: 180, width: 640, height: 360 });
        // A small picture is scaled up to its tile.
        assert_eq!(fit(tile, 320, 180), Rect { x: 640, y: 180, width: 640, height: 360 });
        // Portrait into a wide tile: pillarboxed.
        assert_eq!(
            fit(Rect { x: 0, y: 0, width: 640, height: 360 }, 360, 640),
            Rect { x: 218, y: 0, width: 202, height: 360 }
        );
    }

    /// A flat picture of one luma with a bright bar at `bar`.
    fn picture(width: u32, height: u32, luma: u8, bar: usize) -> ff::frame::Video {
        let mut picture = ff::frame::Video::new(Pixel::YUV420P, width, height);
        let stride = picture.stride(0);
        for (i, px) in picture.data_mut(0).iter_mut().enumerate() {
            *px = if (i % stride).abs_diff(bar) < 6 { 235 } else { luma };
        }
        picture.data_mut(1).fill(128);
        picture.data_mut(2).fill(128);
        picture
    }

    /// Two sources (one H.264, one VP8, as two browsers might send) composed side by side:
    /// the decoded grid shows each source's shade in its half, its moving bar in it, and black
    /// letterboxing above; a removed source leaves the whole picture to the other.
    #[test]
    fn two_sources_are_composed_side_by_side_and_move() {
        assert!(can_encode(Codec::H264) && can_encode(Codec::Vp8), "install Debian's libavcodec");
        let (width, height) = (320u32, 180u32);
        let mut encoders: Vec<(Codec, Encoder)> = [Codec::H264, Codec::Vp8]
            .into_iter()
            .map(|codec| {
                let settings = EncoderSettings { width, height, bitrate_bps: 400_000, fps: 30, keyframe_interval: 300 };
                (codec, Encoder::new(codec, settings).unwrap())
            })
            .collect();
        let settings = GridSettings { width: 640, height: 360, fps: 30, keyframe_interval: 30 };
        let mut grid = Grid::new(settings).unwrap();
        assert!(grid.add("left", Codec::H264).unwrap());
        assert!(grid.add("right", Codec::Vp8).unwrap());
        assert!(!grid.add("left", Codec::H264).unwrap(), "a source is added once");
        let mut decoder = Decoder::new(Codec::H264).unwrap();
        let mut shown = Vec::new();
        for n in 0..20i64 {
            for ((codec, encoder), (key, luma)) in encoders.iter_mut().zip([("left", 60u8), ("right", 160u8)]) {
                let mut packets = Vec::new();
                let bar = (n as usize * 12) % width as usize;
                encoder.encode(&mut picture(width, height, luma, bar), n, n == 0, &mut packets).unwrap();
                for packet in packets {
                    let fed = grid.feed(&key, &packet.payload, packet.keyframe);
                    assert_eq!(fed, Fed::Decoded, "{codec} frame {n}");
                }
            }
            if let Some(packet) = grid.compose(false).unwrap() {
                assert_eq!(packet.keyframe, n % 30 == 0, "picture {n}");
                decoder.decode(&packet.payload, n, &mut shown).unwrap();
            }
        }
        assert!(shown.len() >= 18, "{} pictures", shown.len());
        let luma_at = |picture: &ff::frame::Video, x: usize, y: usize| picture.data(0)[y * picture.stride(0) + x];
        let last = shown.last().unwrap();
        assert_eq!((last.width(), last.height()), (640, 360));
        // Each half is letterboxed (320x180 fits 320x360 at its own size, scaled up to fill).
        assert!(luma_at(last, 160, 20) < 30, "black above the left picture");
        let (left, right) = (luma_at(last, 5, 180), luma_at(last, 325, 180));
        assert!(left.abs_diff(60) < 20 && right.abs_diff(160) < 20, "halves {left} and {right}");
        // The bars moved between the first and the last picture in both halves.
        let brightest = |picture: &ff::frame::Video, from: usize| {
            (from..from + 320).max_by_key(|x| luma_at(picture, *x, 180)).unwrap_or_default() - from
        };
        for half in [0, 320] {
            let (first, then) = (brightest(&shown[2], half), brightest(last, half));
            assert!(first.abs_diff(then) > 40, "the bar of the half at {half} moved from {first} to {then}");
        }
        grid.remove(&"left");
        grid.feed(&"right", &[0, 1, 2], false);
        let packet = grid.compose(true).unwrap().unwrap();
        assert!(packet.keyframe, "a keyframe on request");
        let mut alone = Vec::new();
        decoder.decode(&packet.payload, 99, &mut alone).unwrap();
        assert!(luma_at(&alone[0], 320, 180).abs_diff(160) < 20, "the remaining source fills the grid");
    }
}
