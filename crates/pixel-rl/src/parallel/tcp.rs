//! The all-reduce between processes: a star over TCP. Rank 0 listens; every other rank connects and sends
//! its values; rank 0 adds them in rank order and sends the sum back, so every rank gets the same bits.
//!
//! `burn-collective` 0.21 has a multi-process ("global") level, but it completes only the first all-reduce
//! of a process: `SyncService::sync` (`global/node/sync.rs`) clears a *copy* of its list of synced peers, so
//! the second all-reduce waits for ever (every strategy syncs at its end). Until that is fixed this small
//! protocol does the processes' part; see `docs/training.md`.
//!
//! Frames are little-endian: a hello `[magic u32, rank u32, world u32]` answered by one status byte, then per
//! all-reduce `[call u64, len u64, len × f32]` each way. A rank that dies closes its socket and the others
//! fail with an error instead of waiting.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Result, RlError};

const MAGIC: u32 = 0x5058_4450;

fn err(what: impl std::fmt::Display) -> RlError {
    RlError::Collective(what.to_string())
}

struct Peer {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
}

impl Peer {
    fn new(stream: TcpStream) -> Result<Self> {
        stream.set_nodelay(true).map_err(err)?;
        let reader = BufReader::with_capacity(1 << 20, stream.try_clone().map_err(err)?);
        Ok(Self {
            reader,
            writer: BufWriter::with_capacity(1 << 20, stream),
        })
    }

    fn read_u64(&mut self) -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        self.reader.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn send(&mut self, call: u64, values: &[f32]) -> std::io::Result<()> {
        self.writer.write_all(&call.to_le_bytes())?;
        self.writer
            .write_all(&(values.len() as u64).to_le_bytes())?;
        for v in values {
            self.writer.write_all(&v.to_le_bytes())?;
        }
        self.writer.flush()
    }

    /// Reads a frame of call `call` and `len` values into `into` with `op` (add or overwrite).
    fn receive(
        &mut self,
        call: u64,
        len: usize,
        into: &mut [f32],
        op: fn(&mut f32, f32),
    ) -> std::result::Result<(), String> {
        let c = self.read_u64().map_err(|e| e.to_string())?;
        let n = self.read_u64().map_err(|e| e.to_string())?;
        if c != call || n != len as u64 {
            return Err(format!(
                "all-reduce {call} of {len} values met all-reduce {c} of {n} values: the ranks diverged"
            ));
        }
        let mut buf = vec![0u8; 1 << 16];
        let mut at = 0;
        while at < len {
            let take = (len - at).min(buf.len() / 4);
            let bytes = &mut buf[..take * 4];
            self.reader.read_exact(bytes).map_err(|e| e.to_string())?;
            for (slot, b) in into[at..at + take].iter_mut().zip(bytes.chunks_exact(4)) {
                op(slot, f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            }
            at += take;
        }
        Ok(())
    }

    fn close(&self) {
        let _ = self.writer.get_ref().shutdown(Shutdown::Both);
    }
}

/// This process's end of the star: rank 0 holds a connection to every other rank (in rank order), the
/// others one to rank 0.
pub(crate) struct TcpGroup {
    rank: usize,
    peers: Mutex<(u64, Vec<Peer>)>,
}

impl std::fmt::Debug for TcpGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpGroup")
            .field("rank", &self.rank)
            .finish()
    }
}

impl TcpGroup {
    /// Rank 0 listens on `address` and waits for the others; the others connect to it (retrying until
    /// `timeout`, so the processes may start in any order).
    pub fn connect(rank: usize, world: usize, address: &str, timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        let (w, r) = (
            u32::try_from(world).map_err(err)?,
            u32::try_from(rank).map_err(err)?,
        );
        let peers = if rank == 0 {
            let listener = TcpListener::bind(address)
                .map_err(|e| err(format!("rank 0 cannot listen on {address}: {e}")))?;
            listener.set_nonblocking(true).map_err(err)?;
            let mut by_rank: Vec<Option<Peer>> = (0..world).map(|_| None).collect();
            let mut joined = 1;
            while joined < world {
                match listener.accept() {
                    Ok((stream, from)) => {
                        stream.set_nonblocking(false).map_err(err)?;
                        stream.set_read_timeout(Some(timeout)).map_err(err)?;
                        let mut peer = Peer::new(stream)?;
                        let mut hello = [0u8; 12];
                        peer.reader.read_exact(&mut hello).map_err(err)?;
                        let word = |k: usize| {
                            u32::from_le_bytes([hello[k], hello[k + 1], hello[k + 2], hello[k + 3]])
                        };
                        let (magic, their_rank, their_world) = (word(0), word(4), word(8));
                        let slot = their_rank as usize;
                        let ok = magic == MAGIC
                            && their_world == w
                            && slot > 0
                            && slot < world
                            && by_rank[slot].is_none();
                        peer.writer.write_all(&[u8::from(!ok)]).map_err(err)?;
                        peer.writer.flush().map_err(err)?;
                        if !ok {
                            return Err(err(format!(
                                "{from} joined as rank {their_rank} of {their_world} (magic {magic:#x}); this run \
                                 has {world} ranks and that rank is taken or out of range"
                            )));
                        }
                        peer.writer.get_ref().set_read_timeout(None).map_err(err)?;
                        by_rank[slot] = Some(peer);
                        joined += 1;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            return Err(err(format!(
                                "rank 0: {} of {world} ranks joined on {address} within {timeout:?}",
                                joined
                            )));
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(err(format!("rank 0 accepting on {address}: {e}"))),
                }
            }
            by_rank.into_iter().flatten().collect()
        } else {
            let stream = loop {
                match TcpStream::connect(address) {
                    Ok(s) => break s,
                    Err(e) if Instant::now() > deadline => {
                        return Err(err(format!(
                            "rank {rank}: rank 0 is not reachable at {address} within {timeout:?}: {e}"
                        )));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            };
            stream.set_read_timeout(Some(timeout)).map_err(err)?;
            let mut peer = Peer::new(stream)?;
            for x in [MAGIC, r, w] {
                peer.writer.write_all(&x.to_le_bytes()).map_err(err)?;
            }
            peer.writer.flush().map_err(err)?;
            let mut status = [1u8];
            peer.reader.read_exact(&mut status).map_err(err)?;
            if status[0] != 0 {
                return Err(err(format!(
                    "rank {rank}: rank 0 at {address} refused this rank (another world size, or the rank is taken)"
                )));
            }
            peer.writer.get_ref().set_read_timeout(None).map_err(err)?;
            vec![peer]
        };
        Ok(Self {
            rank,
            peers: Mutex::new((0, peers)),
        })
    }

    /// The element-wise sum of every rank's `values` (added in rank order on rank 0).
    pub fn all_reduce(&self, values: &[f32]) -> Result<Vec<f32>> {
        let mut guard = self
            .peers
            .lock()
            .map_err(|_| err("a previous all-reduce panicked"))?;
        let (call, peers) = &mut *guard;
        *call += 1;
        let call = *call;
        let mut sum = values.to_vec();
        let result = if self.rank == 0 {
            let mut run = || -> std::result::Result<(), String> {
                for (k, peer) in peers.iter_mut().enumerate() {
                    peer.receive(call, values.len(), &mut sum, |s, v| *s += v)
                        .map_err(|e| format!("from rank {}: {e}", k + 1))?;
                }
                for (k, peer) in peers.iter_mut().enumerate() {
                    peer.send(call, &sum)
                        .map_err(|e| format!("to rank {}: {e}", k + 1))?;
                }
                Ok(())
            };
            run()
        } else {
            let peer = &mut peers[0];
            peer.send(call, values)
                .map_err(|e| e.to_string())
                .and_then(|()| peer.receive(call, values.len(), &mut sum, |s, v| *s = v))
                .map_err(|e| format!("with rank 0: {e}"))
        };
        match result {
            Ok(()) => Ok(sum),
            Err(e) => {
                // Close every connection: the other ranks fail instead of waiting.
                for peer in peers.iter() {
                    peer.close();
                }
                Err(err(format!("rank {}: all-reduce {call}: {e}", self.rank)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_address() -> String {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    }

    /// `f(rank, group)` on `world` threads joined at a fresh loopback address; results by rank.
    fn ranks<T: Send>(world: usize, f: impl Fn(usize, TcpGroup) -> T + Sync) -> Vec<T> {
        let address = free_address();
        let f = &f;
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..world)
                .map(|r| {
                    let address = address.clone();
                    s.spawn(move || {
                        let g = TcpGroup::connect(r, world, &address, Duration::from_secs(10))
                            .expect("join");
                        f(r, g)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("rank"))
                .collect()
        })
    }

    #[test]
    fn every_rank_gets_the_sum_call_after_call() {
        let out = ranks(3, |r, g| {
            let base = r as f32;
            let first = g.all_reduce(&[base, 10.0 * base, 0.5]).expect("first");
            // Longer than one read buffer (16 Ki values), to cross the chunking.
            let long: Vec<f32> = (0..40_000).map(|i| (i % 7) as f32 + base).collect();
            let second = g.all_reduce(&long).expect("second");
            (first, second)
        });
        for (first, second) in &out {
            assert_eq!(first, &[3.0, 30.0, 1.5]);
            assert_eq!(second.len(), 40_000);
            assert!(
                second
                    .iter()
                    .enumerate()
                    .all(|(i, v)| *v == 3.0 * (i % 7) as f32 + 3.0)
            );
        }
    }

    #[test]
    fn ranks_that_diverge_get_an_error_instead_of_waiting() {
        let out = ranks(2, |r, g| g.all_reduce(&vec![1.0; 2 + r]).map(|_| ()));
        let rank0 = out[0].as_ref().expect_err("rank 0").to_string();
        assert!(rank0.contains("diverged"), "{rank0}");
        assert!(out[1].is_err(), "rank 1 sees the closed connection");
    }

    #[test]
    fn a_rank_of_another_world_size_is_refused_at_joining() {
        let address = free_address();
        let a = address.clone();
        let zero = std::thread::spawn(move || TcpGroup::connect(0, 2, &a, Duration::from_secs(10)));
        let one = TcpGroup::connect(1, 3, &address, Duration::from_secs(10));
        assert!(one.expect_err("refused").to_string().contains("refused"));
        let zero = zero.join().expect("thread").expect_err("rank 0 refuses");
        assert!(zero.to_string().contains("of 3"), "{zero}");
        // Nobody at the address: the wait ends with a message naming it.
        let lonely = TcpGroup::connect(1, 2, &free_address(), Duration::from_millis(200));
        assert!(
            lonely
                .expect_err("unreachable")
                .to_string()
                .contains("not reachable")
        );
    }
}
