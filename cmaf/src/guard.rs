//! A walk over MP4 boxes before mp4-atom decodes them, refusing what makes it spend memory the
//! input does not pay for. mp4-atom 0.17 decodes an `sgpd` (sample group description) by looping
//! `entry_count` times, and for a grouping type it does not know with no description length an
//! entry takes no bytes: a 153-byte init segment claiming four billion entries grew a vector to
//! gigabytes (found by fuzzing `moq_cmaf`). Written here because the fix belongs upstream;
//! until then no `sgpd` may claim more entries than it has bytes left.
//!
//! The walk is iterative with a depth bound, looks only at box headers, descends only into the
//! container boxes where an `sgpd` can sit, and leaves every other check to the decoder.

use crate::CmafError;

/// Boxes holding boxes, on the way to an `stbl` or a `traf`.
const CONTAINERS: [&[u8; 4]; 11] =
    [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"mvex", b"moof", b"traf", b"edts", b"dinf", b"mfra"];

/// Deeper than any real CMAF nesting (moov/trak/mdia/minf/stbl/sgpd is 6).
const MAX_DEPTH: usize = 12;

/// Checks every `sgpd` within `bytes` (a sequence of boxes).
pub fn check_boxes(bytes: &[u8]) -> Result<(), CmafError> {
    // (start, end, depth) of box sequences still to walk.
    let mut pending = vec![(0usize, bytes.len(), 0usize)];
    while let Some((mut at, end, depth)) = pending.pop() {
        while at + 8 <= end {
            let size32 = u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
            let kind = &bytes[at + 4..at + 8];
            let (header, size) = match size32 {
                // Extends to the end of its parent.
                0 => (8, end - at),
                1 => {
                    let Some(large) = bytes.get(at + 8..at + 16) else { break };
                    let large = u64::from_be_bytes(large.try_into().unwrap_or_default());
                    (16, usize::try_from(large).unwrap_or(usize::MAX))
                }
                size => (8, size),
            };
            // A box overrunning its parent is the decoder's error to report; the boxes before it
            // (and their children, still pending) are checked all the same.
            let Some(box_end) = at.checked_add(size).filter(|e| *e <= end && size >= header) else { break };
            let body = &bytes[at + header..box_end];
            if kind == b"sgpd" {
                check_sgpd(body)?;
            } else if depth < MAX_DEPTH && CONTAINERS.iter().any(|c| c.as_slice() == kind) {
                pending.push((at + header, box_end, depth + 1));
            }
            at = box_end;
        }
    }
    Ok(())
}

/// `sgpd` body: version(1) flags(3) grouping_type(4) [default_length(4) if v>=1]
/// [default_sample_description_index(4) if v>=2] entry_count(4) entries.
fn check_sgpd(body: &[u8]) -> Result<(), CmafError> {
    let Some(&version) = body.first() else { return Ok(()) };
    let count_at = 8 + if version >= 1 { 4 } else { 0 } + if version >= 2 { 4 } else { 0 };
    let Some(count) = body.get(count_at..count_at + 4) else { return Ok(()) };
    let count = u32::from_be_bytes(count.try_into().unwrap_or_default()) as u64;
    let left = (body.len() - count_at - 4) as u64;
    if count > left {
        return Err(CmafError::OutOfRange { what: "sgpd entry_count (more entries than bytes)", value: count });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    fn sgpd(entry_count: u32, entries: &[u8]) -> Vec<u8> {
        let mut body = vec![0, 0, 0, 0];
        body.extend_from_slice(b"xxxx");
        body.extend_from_slice(&entry_count.to_be_bytes());
        body.extend_from_slice(entries);
        boxed(b"sgpd", &body)
    }

    #[test]
    fn an_sgpd_claiming_more_entries_than_bytes_is_refused_wherever_it_nests() {
        let deep =
            |inner: Vec<u8>| boxed(b"moov", &boxed(b"trak", &boxed(b"mdia", &boxed(b"minf", &boxed(b"stbl", &inner)))));
        assert!(check_boxes(&deep(sgpd(2, &[1, 2, 3, 4]))).is_ok());
        assert!(matches!(check_boxes(&deep(sgpd(u32::MAX, &[]))), Err(CmafError::OutOfRange { .. })));
        let fragment = boxed(b"moof", &boxed(b"traf", &sgpd(5, &[0; 4])));
        assert!(check_boxes(&fragment).is_err(), "in a fragment too");
        assert!(check_boxes(&[0, 0, 0, 9, b'm', b'o', b'o', b'v']).is_ok(), "overruns are left to the decoder");
        let then_overrun = [fragment.clone(), vec![0x7b, 0x22, 0x6e, 0x61, b'x', b'x', b'x', b'x']].concat();
        assert!(check_boxes(&then_overrun).is_err(), "a box overrunning after a bad sgpd does not hide it");
    }

    #[test]
    fn the_input_fuzzing_found_is_refused() {
        // The init segment of fuzz/seeds/moq_cmaf/regress-sgpd-entry-count (a moof holding an
        // sgpd of version 0 with an unknown grouping type and no entry bytes).
        let mut sgpd_body = vec![0, 0, 0, 0];
        sgpd_body.extend_from_slice(b"tf,i");
        sgpd_body.extend_from_slice(&0x736f_3600u32.to_be_bytes());
        let init = boxed(b"moof", &[boxed(b"mfhd", &[0, 0, 0, 0, 0, 0, 0, 1]), boxed(b"sgpd", &sgpd_body)].concat());
        assert!(check_boxes(&init).is_err());
    }
}
