//! openraft's async runtime for the store: tokio, exactly as openraft's
//! `TokioRuntime`, except that the random numbers openraft draws (its only use
//! is the election timeout, `Config::new_rand_election_timeout`) can come from
//! a seeded generator.
//!
//! Production never seeds it: [`RaftRng`] then draws from `rand::thread_rng()`
//! (OS entropy), as `TokioRuntime` does. The simulator calls [`seed_raft_rng`]
//! on its thread before a run; every turmoil host runs on that one thread in
//! turmoil's fixed order, so each election timeout of each host is a function
//! of the seed and replays bit for bit.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use openraft::async_runtime::AsyncRuntime;
use openraft::{OptionalSend, TokioRuntime};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

thread_local! {
    static SEEDED: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Make openraft's random draws on this thread come from a generator seeded
/// with `seed` (`None`: back to OS entropy). For deterministic simulation only.
pub fn seed_raft_rng(seed: Option<u64>) {
    SEEDED.with(|s| *s.borrow_mut() = seed.map(StdRng::seed_from_u64));
}

/// openraft's per-thread RNG: the seeded generator of this thread if
/// [`seed_raft_rng`] set one, else `rand::thread_rng()`.
#[derive(Debug, Default, Clone, Copy)]
pub struct RaftRng;

impl RaftRng {
    fn with<R>(f: impl FnOnce(&mut dyn RngCore) -> R) -> R {
        let mut f = Some(f);
        let seeded = SEEDED.with(|s| {
            s.borrow_mut()
                .as_mut()
                .map(|rng| (f.take().expect("called once"))(rng))
        });
        match seeded {
            Some(r) => r,
            None => (f.take().expect("called once"))(&mut rand::thread_rng()),
        }
    }
}

impl RngCore for RaftRng {
    fn next_u32(&mut self) -> u32 {
        Self::with(|r| r.next_u32())
    }
    fn next_u64(&mut self) -> u64 {
        Self::with(|r| r.next_u64())
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        Self::with(|r| r.fill_bytes(dest))
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        Self::with(|r| r.try_fill_bytes(dest))
    }
}

/// `TokioRuntime` with [`RaftRng`] as its thread-local RNG.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StoreRuntime;

type Tokio = TokioRuntime;

impl AsyncRuntime for StoreRuntime {
    type JoinError = <Tokio as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <Tokio as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <Tokio as AsyncRuntime>::Sleep;
    type Instant = <Tokio as AsyncRuntime>::Instant;
    type TimeoutError = <Tokio as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <Tokio as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = RaftRng;
    type OneshotSender<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError = <Tokio as AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotReceiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        Tokio::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        Tokio::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        Tokio::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Tokio::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        RaftRng
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        Tokio::oneshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn seeded_draws_replay_and_unseeded_draws_do_not_panic() {
        let draw = || {
            (0..8)
                .map(|_| StoreRuntime::thread_rng().gen_range(150..300u64))
                .collect::<Vec<_>>()
        };
        seed_raft_rng(Some(7));
        let a = draw();
        seed_raft_rng(Some(7));
        let b = draw();
        seed_raft_rng(None);
        let _ = draw();
        assert_eq!(a, b);
    }
}
