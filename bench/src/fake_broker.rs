//! A minimal in-process broker for testing the bench end to end without chorusd.
//!
//! It speaks just enough of the protocol for one topic: the handshake, SUBSCRIBE at the end of
//! the topic, and PUBLISH, which it acknowledges and delivers to every subscriber as a
//! one-comment EVENTS frame. Faults can be injected to check that the bench notices them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chorus_protocol::{
    decode_preamble, preamble, Decoder, ErrorCode, Event, Events, Frame, PublishAck, Subscribed,
    Welcome, DEFAULT_MAX_FRAME,
};

/// Stream id the fake broker gives its topic once the first comment is stored.
const STREAM: u64 = 7;

/// Max time the broker accepts connections; tests finish well within it.
const LIFETIME: Duration = Duration::from_secs(60);

/// A fault the broker injects into deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    /// Never deliver the comment stored at this offset.
    Drop(u64),
    /// Deliver the comment stored at this offset twice.
    Duplicate(u64),
    /// Store and deliver comments but never acknowledge them.
    NoAcks,
}

#[derive(Debug)]
struct Topic {
    next_offset: u64,
    subscribers: Vec<TcpStream>,
}

/// A running fake broker; it stops accepting when dropped.
#[derive(Debug)]
pub(crate) struct FakeBroker {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl FakeBroker {
    pub(crate) fn start(fault: Fault) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let topic = Arc::new(Mutex::new(Topic {
            next_offset: 0,
            subscribers: Vec::new(),
        }));
        let accept_stop = Arc::clone(&stop);
        thread::spawn(move || accept(&listener, &accept_stop, &topic, fault));
        FakeBroker { addr, stop }
    }

    pub(crate) fn addr(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn accept(listener: &TcpListener, stop: &AtomicBool, topic: &Arc<Mutex<Topic>>, fault: Fault) {
    let deadline = Instant::now() + LIFETIME;
    while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                let topic = Arc::clone(topic);
                thread::spawn(move || serve(stream, &topic, fault));
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Serves one connection until the client closes it or sends something unexpected.
fn serve(stream: TcpStream, topic: &Mutex<Topic>, fault: Fault) {
    stream.set_nonblocking(false).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut reader = stream.try_clone().unwrap();
    let mut writer = stream;
    let mut buf = BytesMut::new();
    let mut decoder = Decoder::new(DEFAULT_MAX_FRAME);
    let mut greeted = false;
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if !greeted {
            match decode_preamble(&mut buf) {
                Ok(Some(_)) => greeted = true,
                Ok(None) => continue,
                Err(_) => return,
            }
        }
        while let Ok(Some(frame)) = decoder.decode(&mut buf) {
            if !handle(frame, &mut writer, topic, fault) {
                return;
            }
        }
    }
}

fn handle(frame: Frame, writer: &mut TcpStream, topic: &Mutex<Topic>, fault: Fault) -> bool {
    match frame {
        Frame::Hello(_) => {
            let welcome = Frame::Welcome(Welcome {
                version: chorus_protocol::VERSION,
                max_frame: DEFAULT_MAX_FRAME,
                server_name: "fake-broker".to_owned(),
                max_payload: 64 * 1024,
                idle_timeout_ms: 0,
                features: 0,
            });
            let mut out = preamble().to_vec();
            out.extend_from_slice(&welcome.to_bytes());
            writer.write_all(&out).is_ok()
        }
        Frame::Subscribe(s) => {
            let mut topic = topic.lock().unwrap();
            let end = topic.next_offset;
            let stream = if end == 0 { 0 } else { STREAM };
            let subscribed = Frame::Subscribed(Subscribed {
                topic: s.topic,
                stream,
                start: end,
                earliest: 0,
                end,
            });
            topic.subscribers.push(writer.try_clone().unwrap());
            writer.write_all(&subscribed.to_bytes()).is_ok()
        }
        Frame::Publish(p) => {
            let mut topic = topic.lock().unwrap();
            let offset = topic.next_offset;
            topic.next_offset += 1;
            let event = Event {
                offset,
                time_us: 0,
                flags: 0,
                publisher: String::new(),
                payload: p.payload,
            };
            let events = Frame::Events(Events::new(p.topic, STREAM, &[event])).to_bytes();
            let copies = match fault {
                Fault::Drop(at) if at == offset => 0,
                Fault::Duplicate(at) if at == offset => 2,
                _ => 1,
            };
            for subscriber in &mut topic.subscribers {
                for _ in 0..copies {
                    let _ = subscriber.write_all(&events);
                }
            }
            if fault == Fault::NoAcks {
                return true;
            }
            let ack = Frame::PublishAck(PublishAck {
                seq: p.seq,
                code: ErrorCode::Ok,
                offset,
                stream: STREAM,
            });
            writer.write_all(&ack.to_bytes()).is_ok()
        }
        _ => false,
    }
}
