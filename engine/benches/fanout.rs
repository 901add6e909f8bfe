//! Micro-benchmarks of the engine's media hot path, through its public API:
//! - `engine_fanout/<n>`: one `TrackPublisher::send` of a video frame to `n` subscribers (the
//!   per-subscriber offer: layer check, timestamp rebase, queue push); throughput is frames
//!   delivered, so the per-element time is the cost per subscriber.
//! - `frame_queue/send_and_drain`: one frame through one subscriber's bounded queue, in and out
//!   (`send` + `drain_into`), the whole engine-side cost of a forwarded frame.
//! - `frame_queue/full`: a frame offered to a subscriber whose queue is full (the drop path).
//!
//! `cargo bench -p junction-endpoint --bench fanout`

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use junction_core::{Codec, MediaFrame, MediaOut, MediaTime, PeerId, PublishRequest, RoomId, TransportKind};
use junction_engine::{Endpoint, Engine, EngineConfig, JoinRequest, TrackPublisher};

/// Frames sent between two drains of the subscribers' queues (under the queue size).
const BATCH: u64 = 256;

struct Room {
    track: TrackPublisher,
    subscribers: Vec<Endpoint>,
    _publisher: Endpoint,
    payload: Bytes,
    seq: u64,
    sink: Vec<MediaOut>,
}

impl Room {
    fn new(subscribers: usize, queue: usize) -> Room {
        let config = EngineConfig { subscriber_queue_frames: queue, event_queue: 1 << 16, ..EngineConfig::default() };
        let engine = Engine::new(config);
        let room = RoomId::new("bench").unwrap();
        let join = |name: String| {
            let request = JoinRequest::new(room.clone(), PeerId::new(name).unwrap(), TransportKind::Internal);
            engine.join(request).unwrap().endpoint
        };
        let publisher = join("publisher".into());
        let track = publisher.rpc.publish(PublishRequest::new("camera", Codec::Vp8)).unwrap();
        let mut subscribers: Vec<Endpoint> = (0..subscribers).map(|i| join(format!("viewer-{i}"))).collect();
        for subscriber in &mut subscribers {
            while subscriber.rpc.try_next_event().is_some() {}
        }
        // A realistic delta frame of a 2.5 Mb/s, 30 fps stream.
        let payload = Bytes::from(vec![0x5a; 10_000]);
        let mut room = Room { track, subscribers, _publisher: publisher, payload, seq: 0, sink: Vec::new() };
        // The first frame a video subscriber takes is a keyframe.
        room.send(true);
        room.drain();
        room
    }

    fn send(&mut self, keyframe: bool) {
        let time = MediaTime::new(self.seq * 3000, 90_000);
        self.seq += 1;
        let frame = MediaFrame::video(Codec::Vp8, time, keyframe, Instant::now(), self.payload.clone());
        self.track.send(black_box(frame)).unwrap();
    }

    fn drain(&mut self) {
        for subscriber in &mut self.subscribers {
            self.sink.clear();
            subscriber.media.drain_into(&mut self.sink, usize::MAX);
            black_box(&self.sink);
        }
    }

    /// Times `iters` sends, draining the queues (untimed) every [`BATCH`] frames.
    fn timed_sends(&mut self, iters: u64) -> Duration {
        let mut spent = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let batch = left.min(BATCH);
            let start = Instant::now();
            for _ in 0..batch {
                self.send(false);
            }
            spent += start.elapsed();
            self.drain();
            left -= batch;
        }
        spent
    }
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine_fanout");
    for subscribers in [1usize, 10, 100, 1000] {
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_with_input(BenchmarkId::from_parameter(subscribers), &subscribers, |b, &n| {
            let mut room = Room::new(n, 1024);
            b.iter_custom(|iters| room.timed_sends(iters));
        });
    }
    group.finish();
}

fn queueing(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_queue");
    group.throughput(Throughput::Elements(1));
    group.bench_function("send_and_drain", |b| {
        let mut room = Room::new(1, 1024);
        b.iter(|| {
            room.send(false);
            room.drain();
        });
    });
    group.bench_function("full", |b| {
        let mut room = Room::new(1, 16);
        for _ in 0..16 {
            room.send(false);
        }
        b.iter(|| room.send(false));
    });
    group.finish();
}

criterion_group!(benches, fanout, queueing);
criterion_main!(benches);
