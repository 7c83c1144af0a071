//! An ordered, bounded pipeline: worker threads make numbered pieces of output while the calling
//! thread consumes them strictly in order (writes them to the file), so that generating and
//! writing overlap.
//!
//! At most `window` pieces exist at any time (being made, made and waiting, or being consumed),
//! and their buffers are reused, so memory depends on the window and the piece size, never on
//! how many pieces there are.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// A finished piece: its job and its bytes or the error that `make` returned.
type Piece<J, E> = (J, Result<Vec<u8>, E>);

struct State<I: Iterator, E> {
    /// The jobs not handed out yet, in output order.
    jobs: I,
    /// No job is left.
    exhausted: bool,
    /// Jobs handed out (the next job's sequence number).
    issued: usize,
    /// Pieces consumed (the sequence number the consumer waits for).
    consumed: usize,
    /// Finished pieces by `sequence % window`.
    ready: Vec<Option<Piece<I::Item, E>>>,
    /// Buffers of consumed pieces, for the next jobs.
    spare: Vec<Vec<u8>>,
    /// The consumer failed or a thread panicked: everyone stops.
    stop: bool,
}

struct Shared<I: Iterator, E> {
    state: Mutex<State<I, E>>,
    /// Signalled when a slot of the window frees up (or on stop).
    space: Condvar,
    /// Signalled when a piece is ready or the jobs run out (or on stop).
    filled: Condvar,
}

impl<I: Iterator, E> Shared<I, E> {
    fn lock(&self) -> MutexGuard<'_, State<I, E>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
    fn stop(&self) {
        self.lock().stop = true;
        self.space.notify_all();
        self.filled.notify_all();
    }
}

/// Stops the pipeline if its thread unwinds, so that no other thread waits forever.
struct StopOnPanic<'a, I: Iterator, E>(&'a Shared<I, E>);

impl<I: Iterator, E> Drop for StopOnPanic<'_, I, E> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.stop();
        }
    }
}

/// Runs `make` for every job on `threads` worker threads, each with its own scratch `S`, and
/// hands the pieces to `consume` on the calling thread in job order. `make` gets a reused
/// buffer, empty or holding an earlier piece, and leaves exactly its piece in it (it may skip
/// zeroing bytes it overwrites); at most `window` pieces are in flight. The first error, from `make` (in job order) or
/// from `consume`, stops the pipeline and is returned; a panic in any thread is propagated.
pub fn run<I, E, S>(
    jobs: I,
    threads: usize,
    window: usize,
    make: impl Fn(&I::Item, &mut S, &mut Vec<u8>) -> Result<(), E> + Sync,
    mut consume: impl FnMut(&I::Item, &[u8]) -> Result<(), E>,
) -> Result<(), E>
where
    I: Iterator + Send,
    I::Item: Send,
    E: Send,
    S: Default,
{
    let window = window.max(1);
    let shared = Shared {
        state: Mutex::new(State {
            jobs,
            exhausted: false,
            issued: 0,
            consumed: 0,
            ready: (0..window).map(|_| None).collect(),
            spare: Vec::new(),
            stop: false,
        }),
        space: Condvar::new(),
        filled: Condvar::new(),
    };
    let shared = &shared;
    let make = &make;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| scope.spawn(move || work(shared, window, make)))
            .collect();
        let result = consume_in_order(shared, window, &mut consume);
        for w in workers {
            if let Err(panic) = w.join() {
                // The worker's own panic, not the scope's generic one.
                std::panic::resume_unwind(panic);
            }
        }
        result
    })
}

/// A worker of [`run`]: takes the next job while the window has room, makes its piece.
fn work<I: Iterator, E, S: Default>(
    shared: &Shared<I, E>,
    window: usize,
    make: &impl Fn(&I::Item, &mut S, &mut Vec<u8>) -> Result<(), E>,
) {
    let _guard = StopOnPanic(shared);
    let mut scratch = S::default();
    loop {
        let (seq, job, mut buf) = {
            let mut s = shared.lock();
            loop {
                if s.stop || s.exhausted {
                    return;
                }
                if s.issued < s.consumed + window {
                    match s.jobs.next() {
                        Some(job) => {
                            let seq = s.issued;
                            s.issued += 1;
                            let buf = s.spare.pop().unwrap_or_default();
                            break (seq, job, buf);
                        }
                        None => {
                            s.exhausted = true;
                            drop(s);
                            shared.filled.notify_all();
                            shared.space.notify_all();
                            return;
                        }
                    }
                }
                s = shared.space.wait(s).unwrap_or_else(PoisonError::into_inner);
            }
        };
        let piece = make(&job, &mut scratch, &mut buf).map(|()| buf);
        shared.lock().ready[seq % window] = Some((job, piece));
        shared.filled.notify_all();
    }
}

/// The consumer's side of [`run`].
fn consume_in_order<I: Iterator, E>(
    shared: &Shared<I, E>,
    window: usize,
    consume: &mut impl FnMut(&I::Item, &[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let _guard = StopOnPanic(shared);
    loop {
        let (job, piece) = {
            let mut s = shared.lock();
            loop {
                let slot = s.consumed % window;
                if let Some(done) = s.ready[slot].take() {
                    break done;
                }
                if s.stop {
                    // A worker panicked; `run` propagates its panic.
                    return Ok(());
                }
                if s.exhausted && s.consumed == s.issued {
                    return Ok(());
                }
                s = shared
                    .filled
                    .wait(s)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        let buf = match piece.and_then(|buf| consume(&job, &buf).map(|()| buf)) {
            Ok(buf) => buf,
            Err(e) => {
                shared.stop();
                return Err(e);
            }
        };
        let mut s = shared.lock();
        s.consumed += 1;
        s.spare.push(buf);
        drop(s);
        shared.space.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(j: usize) -> Vec<u8> {
        (0..j % 7 + 1).map(|i| (j * 31 + i) as u8).collect()
    }

    #[test]
    fn pieces_arrive_in_order_with_any_thread_count_and_window() {
        let want: Vec<u8> = (0..500).flat_map(bytes_of).collect();
        for threads in [1, 2, 5] {
            for window in [1, 2, 9] {
                let mut got = Vec::new();
                let mut jobs_seen = Vec::new();
                run(
                    0..500usize,
                    threads,
                    window,
                    |&j, made: &mut usize, buf| -> Result<(), ()> {
                        *made += 1;
                        buf.clear();
                        buf.extend(bytes_of(j));
                        Ok(())
                    },
                    |&j, b| {
                        jobs_seen.push(j);
                        got.extend_from_slice(b);
                        Ok(())
                    },
                )
                .unwrap();
                assert_eq!(got, want, "{threads} threads, window {window}");
                assert_eq!(jobs_seen, (0..500).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn window_bounds_pieces_in_flight() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let made = AtomicUsize::new(0);
        let mut consumed = 0;
        run(
            0..200usize,
            4,
            3,
            |_, _: &mut (), buf| -> Result<(), ()> {
                made.fetch_add(1, Ordering::SeqCst);
                buf.clear();
                buf.push(0);
                Ok(())
            },
            |_, _| {
                consumed += 1;
                // Pieces made so far include the one being consumed: at most 3 ahead of the
                // ones already consumed.
                assert!(made.load(Ordering::SeqCst) <= consumed - 1 + 3);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(consumed, 200);
    }

    #[test]
    fn first_error_in_order_stops_everything() {
        // A failing job and a failing consumer: the error of the earlier piece wins.
        let mut got = Vec::new();
        let r = run(
            0..1000usize,
            3,
            4,
            |&j, _: &mut (), buf| {
                if j == 40 || j == 700 {
                    return Err(format!("job {j}"));
                }
                buf.clear();
                buf.push(j as u8);
                Ok(())
            },
            |&j, _| {
                got.push(j);
                Ok(())
            },
        );
        assert_eq!(r, Err("job 40".to_string()));
        assert_eq!(got, (0..40).collect::<Vec<_>>());
        let r = run(
            0..1000usize,
            2,
            4,
            |_, _: &mut (), _| Ok(()),
            |&j, _| {
                if j == 10 {
                    Err(j)
                } else {
                    Ok(())
                }
            },
        );
        assert_eq!(r, Err(10));
    }

    #[test]
    fn no_jobs() {
        let r: Result<(), ()> = run(0..0usize, 2, 2, |_, _: &mut (), _| Ok(()), |_, _| panic!());
        assert!(r.is_ok());
    }

    #[test]
    #[should_panic(expected = "worker bug")]
    fn a_worker_panic_propagates() {
        let _ = run(
            0..100usize,
            2,
            2,
            |&j, _: &mut (), _| -> Result<(), ()> {
                if j == 5 {
                    panic!("worker bug");
                }
                Ok(())
            },
            |_, _| Ok(()),
        );
    }

    #[test]
    #[should_panic(expected = "consumer bug")]
    fn a_consumer_panic_propagates() {
        let _ = run(
            0..100usize,
            2,
            2,
            |_, _: &mut (), _| -> Result<(), ()> { Ok(()) },
            |&j, _| {
                if j == 5 {
                    panic!("consumer bug");
                }
                Ok(())
            },
        );
    }
}
