//! The header the bench writes at the front of every payload, so that every broker's
//! deliveries are identified, timed and checked the same way.
//!
//! Layout, all ASCII so that no broker's text framing is disturbed: `CB`, the publisher as 4
//! hex digits, the topic as 6, the message's sequence number within that publisher and topic as
//! 12, and the send time as 16 hex digits of nanoseconds on the run's clock. Padding bytes (`.`)
//! bring the payload to the requested size.

/// Length of the header, and so the smallest payload.
pub(crate) const STAMP_LEN: usize = 40;

const MAGIC: &[u8; 2] = b"CB";
const PAD: u8 = b'.';

/// What a payload header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) publisher: u16,
    /// Topic index, below 2^24.
    pub(crate) topic: u32,
    /// Sequence number within the publisher and topic, from 0, below 2^48.
    pub(crate) seq: u64,
    /// Send time in nanoseconds on the run's clock.
    pub(crate) sent_nanos: u64,
}

impl Stamp {
    /// Writes the stamped payload of `size` bytes (at least [`STAMP_LEN`]) into `buf`.
    pub(crate) fn write(&self, size: usize, buf: &mut Vec<u8>) {
        buf.clear();
        buf.extend_from_slice(MAGIC);
        put_hex(buf, u64::from(self.publisher), 4);
        put_hex(buf, u64::from(self.topic), 6);
        put_hex(buf, self.seq, 12);
        put_hex(buf, self.sent_nanos, 16);
        buf.resize(size.max(STAMP_LEN), PAD);
    }

    /// Reads the header of `payload`; `None` when it is not a payload of this bench.
    pub(crate) fn parse(payload: &[u8]) -> Option<Stamp> {
        if payload.len() < STAMP_LEN || &payload[..2] != MAGIC {
            return None;
        }
        Some(Stamp {
            publisher: u16::try_from(hex(&payload[2..6])?).ok()?,
            topic: u32::try_from(hex(&payload[6..12])?).ok()?,
            seq: hex(&payload[12..24])?,
            sent_nanos: hex(&payload[24..40])?,
        })
    }
}

fn put_hex(buf: &mut Vec<u8>, value: u64, digits: u32) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        let nibble = (value >> (i * 4)) & 0xf;
        buf.push(DIGITS[nibble as usize]);
    }
}

fn hex(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        let nibble = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some((acc << 4) | u64::from(nibble))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            publisher: 3,
            topic: 70_000,
            seq: 123_456_789,
            sent_nanos: 9_876_543_210_123,
        }
    }

    #[test]
    fn stamp_round_trips() {
        let mut buf = Vec::new();
        stamp().write(100, &mut buf);
        assert_eq!(buf.len(), 100);
        assert_eq!(Stamp::parse(&buf), Some(stamp()));
    }

    #[test]
    fn payload_never_shorter_than_stamp() {
        let mut buf = Vec::new();
        stamp().write(10, &mut buf);
        assert_eq!(buf.len(), STAMP_LEN);
    }

    #[test]
    fn header_is_ascii() {
        let mut buf = Vec::new();
        stamp().write(48, &mut buf);
        assert_eq!(&buf[..12], b"CB0003011170");
        assert!(buf.iter().all(u8::is_ascii_graphic));
    }

    #[test]
    fn foreign_payloads_are_rejected() {
        assert_eq!(Stamp::parse(b"hello"), None);
        let mut buf = Vec::new();
        stamp().write(40, &mut buf);
        buf[20] = b'Z';
        assert_eq!(Stamp::parse(&buf), None);
    }
}
