//! Block-parallel gzip writer: the input is cut into independent blocks that worker threads
//! compress with libdeflate, each into a complete gzip member; the members are written in
//! order, so the output is a multi-member gzip stream (RFC 1952 §2.2), which gzip, Go's
//! `compress/gzip` (the 3.x client and `mender-artifact`), zlib's `gunzip` and libarchive
//! (the 4.x/5.x client) read as one stream. Blocks that do not compress are stored.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Input bytes per block (one gzip member each). Larger blocks lose less ratio at block
/// edges; smaller ones bound memory (about `4 * threads` blocks are alive at once).
const BLOCK_SIZE: usize = 1024 * 1024;
/// Size of each of the two samples of the compressibility probe.
const PROBE_SIZE: usize = 32 * 1024;
/// A block whose samples do not shrink below this fraction is stored, not deflated:
/// deflate spends CPU on random-looking data (packed files) for no gain.
const INCOMPRESSIBLE: f64 = 0.97;

/// One block to compress; `out` is a reused buffer for the result.
struct Job {
    seq: u64,
    data: Vec<u8>,
    out: Vec<u8>,
}

/// A compressed block with its buffers.
struct Done {
    seq: u64,
    data: Vec<u8>,
    out: io::Result<Vec<u8>>,
}

/// The per-thread compressors: the real one, a fast one for the probe, and level 0
/// (stored blocks only) for incompressible data.
struct Deflaters {
    main: libdeflater::Compressor,
    probe: libdeflater::Compressor,
    stored: libdeflater::Compressor,
    probe_out: Vec<u8>,
    /// The member of an all-zero block and the block's length: free space in a filesystem
    /// image is long runs of such blocks, compressed once.
    zero_member: Option<(usize, Vec<u8>)>,
}

/// Whether `data` is all zero bytes (vectorizes; stops at the first non-zero 4 KiB).
fn is_zero(data: &[u8]) -> bool {
    data.chunks(4096)
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// A libdeflate compressor at `level` (0 = stored blocks only, 1 fastest … 12 best).
fn compressor(level: i32) -> libdeflater::Compressor {
    libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level).unwrap_or_default())
}

impl Deflaters {
    fn new(level: i32) -> Self {
        Deflaters {
            main: compressor(level),
            probe: compressor(1),
            stored: compressor(0),
            probe_out: Vec::new(),
            zero_member: None,
        }
    }

    /// Whether two samples (at 1/4 and 3/4 of the block) both fail to compress.
    fn looks_incompressible(&mut self, data: &[u8]) -> bool {
        if data.len() < 4 * PROBE_SIZE {
            return false;
        }
        let bound = self.probe.deflate_compress_bound(PROBE_SIZE);
        self.probe_out.resize(bound, 0);
        [data.len() / 4, 3 * data.len() / 4].iter().all(|&at| {
            let sample = &data[at - PROBE_SIZE / 2..at + PROBE_SIZE / 2];
            match self.probe.deflate_compress(sample, &mut self.probe_out) {
                Ok(n) => n as f64 >= sample.len() as f64 * INCOMPRESSIBLE,
                Err(_) => true,
            }
        })
    }

    /// Compresses `data` into one gzip member in `out`.
    fn member(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let zero = !data.is_empty() && is_zero(data);
        if zero {
            if let Some((len, member)) = &self.zero_member {
                if *len == data.len() {
                    out.clear();
                    out.extend_from_slice(member);
                    return Ok(());
                }
            }
        }
        self.compress(data, out)?;
        if zero {
            self.zero_member = Some((data.len(), out.clone()));
        }
        Ok(())
    }

    fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let c = if self.looks_incompressible(data) {
            &mut self.stored
        } else {
            &mut self.main
        };
        let bound = c.gzip_compress_bound(data.len());
        out.resize(bound, 0);
        let n = c
            .gzip_compress(data, out)
            .map_err(|e| io::Error::other(format!("gzip block compression failed: {e:?}")))?;
        out.truncate(n);
        Ok(())
    }
}

fn worker(jobs: Arc<Mutex<Receiver<Job>>>, results: Sender<Done>, level: i32) {
    let mut d = Deflaters::new(level);
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        let Job { seq, data, mut out } = job;
        // A panic in the compressor must not leave the writer waiting forever.
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            d.member(&data, &mut out).map(|()| out)
        }))
        .unwrap_or_else(|_| Err(io::Error::other("gzip worker panicked")));
        if results
            .send(Done {
                seq,
                data,
                out: res,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Where blocks are compressed.
enum Engine {
    /// On the calling thread (small members: no threads to start).
    Inline(Box<Deflaters>),
    /// On worker threads; results come back in any order.
    Threads {
        jobs: Option<Sender<Job>>,
        results: Receiver<Done>,
        workers: Vec<JoinHandle<()>>,
    },
}

/// A multi-member gzip writer. Memory is bounded by about `2 * max_in_flight` blocks (input
/// and output of every block dispatched but not yet written).
pub(crate) struct BlockGzWriter<W: Write> {
    /// `None` only after `finish` moved it out.
    out: Option<W>,
    block: Vec<u8>,
    block_size: usize,
    engine: Engine,
    next_seq: u64,
    next_write: u64,
    done: BTreeMap<u64, Done>,
    in_flight: usize,
    max_in_flight: usize,
    /// Buffers of written blocks, reused for the next ones.
    free: Vec<(Vec<u8>, Vec<u8>)>,
}

impl<W: Write> BlockGzWriter<W> {
    /// A writer compressing at `level` (0 = stored only, 1–12) on `threads` worker threads, or on the
    /// calling thread when `threads` is 0.
    pub(crate) fn new(out: W, level: i32, threads: usize) -> Self {
        Self::with_block_size(out, level, threads, BLOCK_SIZE)
    }

    fn with_block_size(out: W, level: i32, threads: usize, block_size: usize) -> Self {
        let engine = if threads == 0 {
            Engine::Inline(Box::new(Deflaters::new(level)))
        } else {
            let (job_tx, job_rx) = mpsc::channel::<Job>();
            let (res_tx, res_rx) = mpsc::channel::<Done>();
            let job_rx = Arc::new(Mutex::new(job_rx));
            let workers = (0..threads)
                .map(|_| {
                    let rx = Arc::clone(&job_rx);
                    let tx = res_tx.clone();
                    std::thread::spawn(move || worker(rx, tx, level))
                })
                .collect();
            Engine::Threads {
                jobs: Some(job_tx),
                results: res_rx,
                workers,
            }
        };
        BlockGzWriter {
            out: Some(out),
            block: Vec::new(),
            block_size,
            engine,
            next_seq: 0,
            next_write: 0,
            done: BTreeMap::new(),
            in_flight: 0,
            max_in_flight: 2 * threads.max(1),
            free: Vec::new(),
        }
    }

    fn sink(&mut self) -> io::Result<&mut W> {
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("gzip writer already finished"))
    }

    /// Writes every finished block that is next in order.
    fn write_ready(&mut self) -> io::Result<()> {
        while let Some(done) = self.done.remove(&self.next_write) {
            let Done { data, out, .. } = done;
            let out = out?;
            self.sink()?.write_all(&out)?;
            self.next_write += 1;
            self.free.push((data, out));
        }
        Ok(())
    }

    /// Takes one result from the workers, blocking if asked; returns whether it got one.
    fn receive(&mut self, block: bool) -> io::Result<bool> {
        let Engine::Threads { results, .. } = &self.engine else {
            return Ok(false);
        };
        let got = if block {
            Some(
                results
                    .recv()
                    .map_err(|_| io::Error::other("gzip worker threads stopped unexpectedly"))?,
            )
        } else {
            results.try_recv().ok()
        };
        match got {
            Some(d) => {
                self.in_flight -= 1;
                self.done.insert(d.seq, d);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Sends the current block to be compressed.
    fn dispatch(&mut self) -> io::Result<()> {
        // Bound every block not yet written, compressed or not: one slow block must not let
        // fast ones (zeros) pile up behind it.
        while self.next_seq - self.next_write >= self.max_in_flight as u64 {
            self.receive(true)?;
            self.write_ready()?;
        }
        let (mut next_block, out) = self.free.pop().unwrap_or_default();
        next_block.clear();
        let data = std::mem::replace(&mut self.block, next_block);
        let seq = self.next_seq;
        self.next_seq += 1;
        match &mut self.engine {
            Engine::Inline(d) => {
                let mut out = out;
                let res = d.member(&data, &mut out).map(|()| out);
                self.done.insert(
                    seq,
                    Done {
                        seq,
                        data,
                        out: res,
                    },
                );
            }
            Engine::Threads { jobs, .. } => {
                jobs.as_ref()
                    .ok_or_else(|| io::Error::other("gzip writer already finished"))?
                    .send(Job { seq, data, out })
                    .map_err(|_| io::Error::other("gzip worker threads stopped unexpectedly"))?;
                self.in_flight += 1;
                while self.receive(false)? {}
            }
        }
        self.write_ready()
    }

    /// Compresses the remaining input and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        // An empty input still gets one (empty) member: a valid gzip stream.
        if !self.block.is_empty() || self.next_seq == 0 {
            self.dispatch()?;
        }
        while self.in_flight > 0 {
            self.receive(true)?;
            self.write_ready()?;
        }
        self.write_ready()?;
        self.shutdown();
        self.out
            .take()
            .ok_or_else(|| io::Error::other("gzip writer already finished"))
    }

    fn shutdown(&mut self) {
        if let Engine::Threads { jobs, workers, .. } = &mut self.engine {
            *jobs = None;
            for w in workers.drain(..) {
                let _ = w.join();
            }
        }
    }
}

impl<W: Write> Write for BlockGzWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.block.capacity() < self.block_size {
            self.block.reserve_exact(self.block_size - self.block.len());
        }
        let room = self.block_size - self.block.len();
        let n = room.min(buf.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == self.block_size {
            self.dispatch()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sink()?.flush()
    }
}

impl<W: Write> Drop for BlockGzWriter<W> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    const TEST_BLOCK: usize = 64 * 1024;

    fn decode_all(gz: &[u8]) -> Vec<u8> {
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(gz)
            .read_to_end(&mut back)
            .unwrap();
        back
    }

    /// Counts the gzip members by decoding them one at a time.
    fn members(gz: &[u8]) -> usize {
        let mut rest = gz;
        let mut n = 0;
        while !rest.is_empty() {
            // The bufread decoder consumes exactly one member from the slice.
            let mut d = flate2::bufread::GzDecoder::new(&mut rest);
            std::io::copy(&mut d, &mut std::io::sink()).unwrap();
            n += 1;
        }
        n
    }

    #[test]
    fn zero_blocks_reuse_one_member() {
        let mut data = vec![0u8; 5 * TEST_BLOCK];
        data[3 * TEST_BLOCK + 17] = 1;
        let mut w = BlockGzWriter::with_block_size(Vec::new(), 6, 2, TEST_BLOCK);
        w.write_all(&data).unwrap();
        w.write_all(&[0u8; 100]).unwrap();
        let gz = w.finish().unwrap();
        data.extend_from_slice(&[0u8; 100]);
        assert!(decode_all(&gz) == data);
        assert_eq!(members(&gz), 6);
        assert!(is_zero(&[0u8; 10_000]));
        assert!(!is_zero(&[0, 0, 0, 0, 1]));
    }

    #[test]
    fn probe_tells_text_from_noise() {
        let mut d = Deflaters::new(6);
        let text: Vec<u8> = b"text "
            .iter()
            .cycle()
            .take(4 * PROBE_SIZE)
            .copied()
            .collect();
        assert!(!d.looks_incompressible(&text));
        assert!(d.looks_incompressible(&noise(4 * PROBE_SIZE, 3)));
    }

    fn roundtrip(data: &[u8], threads: usize) {
        let mut w = BlockGzWriter::with_block_size(Vec::new(), 6, threads, TEST_BLOCK);
        // Uneven write sizes exercise block boundaries.
        for chunk in data.chunks(20_007) {
            w.write_all(chunk).unwrap();
        }
        let gz = w.finish().unwrap();
        let back = decode_all(&gz);
        assert_eq!(back.len(), data.len());
        assert!(back == data, "round trip differs for {} bytes", data.len());
        assert_eq!(members(&gz), data.len().div_ceil(TEST_BLOCK).max(1));
    }

    fn noise(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn round_trips_across_block_boundaries() {
        let mut data = noise(5 * TEST_BLOCK + 12345, 0x12345678);
        for (i, b) in data.iter_mut().enumerate() {
            if i % 3 != 0 {
                *b = (i % 251) as u8;
            }
        }
        for len in [0, 1, TEST_BLOCK - 1, TEST_BLOCK, TEST_BLOCK + 1, data.len()] {
            roundtrip(&data[..len], 2);
            roundtrip(&data[..len], 0);
        }
        roundtrip(&data, 1);
        roundtrip(&data, 5);
    }

    #[test]
    fn incompressible_blocks_are_stored_and_round_trip() {
        let block = 4 * PROBE_SIZE;
        let mut data = Vec::new();
        for i in 0..6 {
            if i % 2 == 0 {
                data.extend(noise(block, 0x9e3779b9 + i));
            } else {
                data.extend(b"text ".iter().cycle().take(block));
            }
        }
        let mut w = BlockGzWriter::with_block_size(Vec::new(), 6, 2, block);
        w.write_all(&data).unwrap();
        let gz = w.finish().unwrap();
        // Three random blocks stored (input size plus 5 bytes per 64 KiB and 18 per member),
        // three text blocks nearly vanish.
        let stored = 3 * (block + 5 * block.div_ceil(65_535) + 18);
        assert!(gz.len() >= stored, "{}", gz.len());
        assert!(gz.len() < stored + 3 * block / 50, "{}", gz.len());
        assert!(decode_all(&gz) == data);
    }
}
