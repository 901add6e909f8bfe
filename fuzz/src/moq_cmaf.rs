//! MoQ ingest (transports/moq/src/ingest.rs, the `cmaf` crate): what a `moq-pub`-style publisher puts in
//! its namespace — the `.catalog` JSON, the CMAF init segment (ftyp + moov: trak, stsd with
//! avc1/avcC, mp4a/esds, Opus/dOps, trex defaults) and fragments (moof + mdat: tfhd, tfdt,
//! trun sample sizes, flags, composition offsets) — into engine frames, through the functions
//! the ingest task calls (see `junction_moq::fuzz`).
//!
//! Input: catalog, init segment, then fragments, separated by [`crate::SEPARATOR`].

pub fn run(data: &[u8]) {
    let mut records = crate::records(data);
    let catalog = records.next().unwrap_or_default();
    let init = records.next().unwrap_or_default();
    let fragments: Vec<&[u8]> = records.collect();
    junction_moq::fuzz::cmaf_ingest(catalog, init, &fragments);
}
