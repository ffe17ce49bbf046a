//! Block-parallel gzip writer (pigz style): the input is cut into blocks that worker threads
//! deflate independently (each primed with the previous 32 KiB as dictionary, sync-flushed to
//! a byte boundary), and the pieces are joined in order into one standard gzip member.

use flate2::{Compress, Crc, FlushCompress, Status};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Input bytes per block. Larger blocks lose less ratio at block edges.
const BLOCK_SIZE: usize = 1024 * 1024;
/// Deflate window: the dictionary carried from one block to the next.
const DICT_SIZE: usize = 32 * 1024;

struct Job {
    seq: u64,
    data: Vec<u8>,
    dict: Vec<u8>,
    last: bool,
}

type JobResult = (u64, io::Result<(Vec<u8>, Crc)>);

/// A gzip writer whose deflate work runs on `threads` worker threads. Memory is bounded by
/// about `2 * threads + 2` blocks of input and output.
pub(crate) struct ParallelGzWriter<W: Write> {
    /// `None` only after `finish` moved it out.
    out: Option<W>,
    block: Vec<u8>,
    block_size: usize,
    tail: Vec<u8>,
    next_seq: u64,
    next_write: u64,
    done: BTreeMap<u64, io::Result<(Vec<u8>, Crc)>>,
    in_flight: usize,
    max_in_flight: usize,
    jobs: Option<Sender<Job>>,
    results: Receiver<JobResult>,
    workers: Vec<JoinHandle<()>>,
    crc: Crc,
    header_written: bool,
}

/// Sample size for the compressibility probe of a block.
const PROBE_SIZE: usize = 64 * 1024;
/// A block whose probe does not shrink below this fraction is stored, not deflated: deflate
/// at level 6 spends a lot of CPU on random-looking data (already-compressed files) for
/// no gain.
const INCOMPRESSIBLE: f64 = 0.97;

/// Per-worker deflate state: the real compressor, a fast probe and a "stored" compressor.
struct Deflaters {
    main: Compress,
    probe: Compress,
    stored: Compress,
}

fn looks_incompressible(probe: &mut Compress, data: &[u8]) -> io::Result<bool> {
    if data.len() < 4 * PROBE_SIZE {
        return Ok(false);
    }
    // Sample the middle of the block (its start may be a file header).
    let mid = data.len() / 2 - PROBE_SIZE / 2;
    let sample = &data[mid..mid + PROBE_SIZE];
    probe.reset();
    // Generous output room: zlib-rs must never run short of output space here.
    let mut out = Vec::with_capacity(2 * PROBE_SIZE + 4096);
    probe
        .compress_vec(sample, &mut out, FlushCompress::Sync)
        .map_err(|e| io::Error::other(format!("deflate probe: {e}")))?;
    let done = probe.total_in() as usize == sample.len();
    Ok(done && out.len() as f64 >= sample.len() as f64 * INCOMPRESSIBLE)
}

fn deflate_block(d: &mut Deflaters, job: &Job) -> io::Result<Vec<u8>> {
    let c = if looks_incompressible(&mut d.probe, &job.data)? {
        &mut d.stored
    } else {
        &mut d.main
    };
    c.reset();
    if !job.dict.is_empty() {
        c.set_dictionary(&job.dict)
            .map_err(|e| io::Error::other(format!("deflate dictionary: {e}")))?;
    }
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(job.data.len() / 2 + 64 * 1024);
    loop {
        if out.capacity() - out.len() < 16 * 1024 {
            out.reserve(256 * 1024);
        }
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&job.data[consumed..], &mut out, flush)
            .map_err(|e| io::Error::other(format!("deflate: {e}")))?;
        let all_in = c.total_in() as usize == job.data.len();
        if job.last {
            if status == Status::StreamEnd {
                break;
            }
        } else if all_in && out.len() < out.capacity() {
            // Output space left over: the sync flush is complete.
            break;
        }
    }
    Ok(out)
}

fn worker(jobs: Arc<Mutex<Receiver<Job>>>, results: Sender<JobResult>, level: u32) {
    let mut d = Deflaters {
        main: Compress::new(flate2::Compression::new(level), false),
        probe: Compress::new(flate2::Compression::new(1), false),
        stored: Compress::new(flate2::Compression::new(0), false),
    };
    loop {
        let job = {
            let rx = match jobs.lock() {
                Ok(rx) => rx,
                Err(_) => return,
            };
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        // A panic in the deflate code must not leave the writer waiting forever.
        let res =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| deflate_block(&mut d, &job)))
                .unwrap_or_else(|_| Err(io::Error::other("deflate worker panicked")))
                .map(|out| {
                    let mut crc = Crc::new();
                    crc.update(&job.data);
                    (out, crc)
                });
        if results.send((job.seq, res)).is_err() {
            return;
        }
    }
}

impl<W: Write> ParallelGzWriter<W> {
    pub(crate) fn new(out: W, level: u32, threads: usize) -> Self {
        Self::with_block_size(out, level, threads, BLOCK_SIZE)
    }

    fn with_block_size(out: W, level: u32, threads: usize, block_size: usize) -> Self {
        let threads = threads.max(1);
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let (res_tx, res_rx) = mpsc::channel::<JobResult>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&job_rx);
                let tx = res_tx.clone();
                std::thread::spawn(move || worker(rx, tx, level))
            })
            .collect();
        ParallelGzWriter {
            out: Some(out),
            block: Vec::with_capacity(block_size),
            block_size,
            tail: Vec::new(),
            next_seq: 0,
            next_write: 0,
            done: BTreeMap::new(),
            in_flight: 0,
            max_in_flight: 2 * threads,
            jobs: Some(job_tx),
            results: res_rx,
            workers,
            crc: Crc::new(),
            header_written: false,
        }
    }

    fn sink(&mut self) -> io::Result<&mut W> {
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("gzip writer already finished"))
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.header_written {
            // magic, deflate, no flags, mtime 0, XFL 0, OS unknown (255)
            self.sink()?
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])?;
            self.header_written = true;
        }
        Ok(())
    }

    /// Writes every finished block that is next in order.
    fn write_ready(&mut self) -> io::Result<()> {
        while let Some(res) = self.done.remove(&self.next_write) {
            let (bytes, crc) = res?;
            self.write_header()?;
            self.sink()?.write_all(&bytes)?;
            self.crc.combine(&crc);
            self.next_write += 1;
        }
        Ok(())
    }

    fn receive(&mut self, block: bool) -> io::Result<bool> {
        let got = if block {
            match self.results.recv() {
                Ok(r) => Some(r),
                Err(_) => return Err(io::Error::other("gzip worker threads stopped unexpectedly")),
            }
        } else {
            self.results.try_recv().ok()
        };
        match got {
            Some((seq, res)) => {
                self.done.insert(seq, res);
                self.in_flight -= 1;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        while self.in_flight >= self.max_in_flight {
            self.receive(true)?;
            self.write_ready()?;
        }
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(self.block_size));
        let dict = std::mem::take(&mut self.tail);
        self.tail = data[data.len().saturating_sub(DICT_SIZE)..].to_vec();
        let job = Job {
            seq: self.next_seq,
            data,
            dict,
            last,
        };
        self.jobs
            .as_ref()
            .expect("dispatch after finish")
            .send(job)
            .map_err(|_| io::Error::other("gzip worker threads stopped unexpectedly"))?;
        self.next_seq += 1;
        self.in_flight += 1;
        while self.receive(false)? {}
        self.write_ready()
    }

    /// Compresses the remaining input, writes the trailer and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        while self.in_flight > 0 {
            self.receive(true)?;
            self.write_ready()?;
        }
        self.write_header()?;
        let sum = self.crc.sum();
        let amount = self.crc.amount();
        self.sink()?.write_all(&sum.to_le_bytes())?;
        self.sink()?.write_all(&amount.to_le_bytes())?;
        self.shutdown();
        Ok(self.out.take().expect("finish is called once"))
    }

    fn shutdown(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl<W: Write> Write for ParallelGzWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.block_size - self.block.len();
        let n = room.min(buf.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == self.block_size {
            self.dispatch(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sink()?.flush()
    }
}

impl<W: Write> Drop for ParallelGzWriter<W> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    const TEST_BLOCK: usize = 64 * 1024;

    fn roundtrip(data: &[u8], threads: usize) {
        let mut w = ParallelGzWriter::with_block_size(Vec::new(), 6, threads, TEST_BLOCK);
        // Uneven write sizes exercise block boundaries.
        for chunk in data.chunks(20_007) {
            w.write_all(chunk).unwrap();
        }
        let gz = w.finish().unwrap();
        let mut d = flate2::read::GzDecoder::new(gz.as_slice());
        let mut back = Vec::new();
        d.read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), data.len());
        assert!(back == data, "round trip differs for {} bytes", data.len());
        // A single member: nothing after the trailer.
        let consumed = gz.len() - d.into_inner().len();
        assert_eq!(consumed, gz.len());
    }

    #[test]
    fn round_trips_across_block_boundaries() {
        let mut x = 0x12345678u32;
        let noise: Vec<u8> = (0..5 * TEST_BLOCK + 12345)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if i % 3 == 0 {
                    (x >> 24) as u8
                } else {
                    (i % 251) as u8
                }
            })
            .collect();
        for len in [
            0,
            1,
            TEST_BLOCK - 1,
            TEST_BLOCK,
            TEST_BLOCK + 1,
            noise.len(),
        ] {
            roundtrip(&noise[..len], 2);
        }
        roundtrip(&noise, 1);
        roundtrip(&noise, 5);
    }

    #[test]
    fn incompressible_blocks_are_stored_and_round_trip() {
        let mut x = 0x9e3779b9u32;
        let mut data = Vec::new();
        for block in 0..6 {
            for i in 0..4 * PROBE_SIZE {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                data.push(if block % 2 == 0 {
                    (x >> 24) as u8
                } else {
                    b"text "[i % 5]
                });
            }
        }
        let mut w = ParallelGzWriter::with_block_size(Vec::new(), 6, 2, 4 * PROBE_SIZE);
        w.write_all(&data).unwrap();
        let gz = w.finish().unwrap();
        // Three random blocks stored (~input size), three text blocks nearly vanish.
        assert!(
            gz.len() < 3 * 4 * PROBE_SIZE + 3 * 4 * PROBE_SIZE / 50,
            "{}",
            gz.len()
        );
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == data);
    }
}
