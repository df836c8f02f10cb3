//! The async runtime a server binary runs on: as many threads as
//! `--worker-threads` asks for (one is the current-thread scheduler), and
//! the server's future run as one of its tasks.

use anyhow::Context;

/// The async runtime flags of every Herald server binary.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct RuntimeArgs {
    /// Threads that run the server's tasks, 1 to 1024 [default: half the
    /// cores the process may use, at least one]
    #[arg(long, env = "HERALD_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
}

impl RuntimeArgs {
    /// The threads to run the server's tasks on: the flag's, or half the
    /// cores this process may use (its CPU quota counted), at least one.
    /// One is the thread that calls `block_on` (see [`RuntimeArgs::runtime`]).
    pub fn threads(&self) -> usize {
        self.worker_threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            usize::from,
        )
    }

    /// The runtime, with I/O and timers: for one thread, tokio's
    /// current-thread scheduler on the thread that calls `block_on`; for
    /// more, a multi-threaded one with [`RuntimeArgs::threads`] workers.
    ///
    /// One worker of a multi-threaded runtime would run the same tasks less
    /// well: a task it wakes runs next (its LIFO slot), so each gRPC answer
    /// or Redis command was written on its own as soon as it was ready,
    /// where the current-thread scheduler runs the woken connection task
    /// after the tasks already waiting, and writes what they all gave it at
    /// once (BENCHMARKS.md §25).
    pub fn runtime(&self) -> anyhow::Result<tokio::runtime::Runtime> {
        let mut builder = match self.threads() {
            1 => tokio::runtime::Builder::new_current_thread(),
            threads => {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(threads);
                builder
            }
        };
        builder
            .enable_all()
            .build()
            .context("cannot start the async runtime")
    }
}

/// Runs `future` as a task of `runtime` until it ends, the calling thread
/// only waiting for it (or, on a current-thread runtime, running it and
/// every other task); a panic in it goes on unwinding here.
///
/// A future that a multi-threaded runtime's `block_on` runs itself stays on
/// the calling thread while the workers drive the I/O, so each of its
/// wake-ups (a processor's receive loop wakes several times per event)
/// would be handed over between two threads (BENCHMARKS.md §24).
pub fn run_as_task<T, Fut>(runtime: &tokio::runtime::Runtime, future: Fut) -> anyhow::Result<T>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
{
    runtime.block_on(async move {
        match tokio::spawn(future).await {
            Ok(ended) => ended,
            Err(join) => match join.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(cancelled) => Err(anyhow::Error::new(cancelled)),
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime_of(threads: u16) -> tokio::runtime::Runtime {
        let args = RuntimeArgs {
            worker_threads: Some(threads),
        };
        args.runtime().expect("a runtime")
    }

    /// The thread `future` ran on, and its name.
    fn ran_on(threads: u16) -> (std::thread::ThreadId, Option<String>) {
        run_as_task(&runtime_of(threads), async {
            let thread = std::thread::current();
            Ok((thread.id(), thread.name().map(str::to_owned)))
        })
        .expect("it ran")
    }

    #[test]
    fn one_thread_is_the_callers_and_more_are_workers() {
        let caller = std::thread::current().id();
        assert_eq!(ran_on(1).0, caller);
        let (thread, name) = ran_on(2);
        assert_ne!(thread, caller);
        assert_eq!(name.as_deref(), Some("tokio-rt-worker"));
    }

    #[test]
    fn its_error_is_returned_and_its_panic_unwinds_in_the_caller() {
        for threads in [1, 2] {
            let runtime = runtime_of(threads);
            let failed: anyhow::Result<()> =
                run_as_task(&runtime, async { Err(anyhow::anyhow!("port taken")) });
            assert_eq!(failed.expect_err("an error").to_string(), "port taken");
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_as_task::<(), _>(&runtime, async { panic!("a bug") })
            }));
            let payload = panicked.expect_err("the panic came through");
            assert_eq!(payload.downcast_ref::<&str>(), Some(&"a bug"));
        }
    }
}
