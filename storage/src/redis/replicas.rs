//! `--redis-wait-replicas`: each write is followed by a `WAIT` for that
//! many replicas of the master it went to, on a connection of the
//! partition's own (a `WAIT` blocks the connection it runs on, so on the
//! shared one every command behind it would wait too).
//!
//! A partition whose master has fewer replicas than asked (a promoted
//! replica, right after a failover) would make every write wait the whole
//! `WAIT` timeout: once a `WAIT` comes back short, the partition's writes
//! are refused at once (UNAVAILABLE, nothing written) until its master
//! reports enough online replicas again, which one caller at a time checks
//! at most once a second (`INFO replication` through a script on the
//! partition's key, so it reaches the partition's master on a cluster too).
//! Writes resume by themselves when the replicas are back.
//!
//! One write (and its `WAIT`) of a partition is under way at a time, the
//! others wait their turn (the batches grow meanwhile) and see the gate
//! as it is when their turn comes: no `WAIT` ever queues behind another
//! on the connection, so each answers within its timeout.

use std::{
    sync::{LazyLock, Mutex},
    time::{Duration, Instant},
};

use ::redis::{
    AsyncCommands, ErrorKind, FromRedisValue, RedisError, Script, ScriptInvocation, ServerErrorKind,
};

use super::{RedisTarget, connection, connection::Conn, redis_error};
use herald::{
    error::{Error, Result},
    partition::{Partition, Partitions},
};

/// How long a write waits for its replicas.
pub(super) const WAIT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a partition refused for want of replicas is checked again.
const RECHECK: Duration = Duration::from_secs(1);
/// Longest a write waits for its partition's turn.
const TURN_WAIT: Duration = Duration::from_secs(2);

/// Counts the online replicas of the master holding KEYS[1].
static ONLINE_REPLICAS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/online_replicas.lua")));

/// What a partition's master last showed of its replicas.
#[derive(Debug, Default)]
struct Gate {
    /// Set while the master has too few replicas: how many it had, and
    /// when that was seen.
    short: Option<(u32, Instant)>,
    /// Whether a caller is checking the replicas again now.
    checking: bool,
}

/// The replicated writes of one deployment.
pub(super) struct Replication {
    /// Replicas each write waits for.
    wanted: u32,
    /// Each partition's connection for its writes and their `WAIT`s.
    conns: Vec<Conn>,
    /// Each partition's gate.
    gates: Vec<Mutex<Gate>>,
    /// Each partition's turn: one write under way at a time.
    turns: Vec<tokio::sync::Semaphore>,
}

/// What a replicated write came to.
pub(super) enum Replicated<T> {
    /// Written and on the asked replicas.
    Yes(T),
    /// Written on the master, on this many replicas only when the `WAIT`
    /// ended: it may be kept or lost in a failover.
    Short(T, u32),
}

impl Replication {
    /// Writes waiting for `wanted` replicas, with connections to `target`
    /// (made on first use) for each of `partitions`.
    pub(super) fn new(target: &RedisTarget, partitions: Partitions, wanted: u32) -> Result<Self> {
        let conns = partitions
            .all()
            .map(|_| connection::connect(target).map(|(conn, _)| conn))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            wanted,
            gates: conns.iter().map(|_| Mutex::default()).collect(),
            turns: conns
                .iter()
                .map(|_| tokio::sync::Semaphore::new(1))
                .collect(),
            conns,
        })
    }

    /// Partitions refused now for want of replicas, each with why.
    pub(super) fn short(&self, partitions: Partitions) -> Vec<(Partition, String)> {
        partitions
            .all()
            .filter_map(|p| {
                let gate = self.gates[p.index()].lock().expect("gate lock");
                gate.short.map(|(n, _)| (p, self.refused(p, n).to_string()))
            })
            .collect()
    }

    /// Runs `invocation` (a script on partition `p`'s keys, `key` one of
    /// them) and waits for the replicas; refused at once, running nothing,
    /// while the partition's master is known to have too few.
    pub(super) async fn write<T: FromRedisValue>(
        &self,
        p: Partition,
        key: &str,
        shared: &Conn,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<Replicated<T>> {
        let turn = tokio::time::timeout(TURN_WAIT, self.turns[p.index()].acquire()).await;
        let Ok(Ok(_turn)) = turn else {
            return Err(Error::Unavailable(format!(
                "partition {p}'s writes are waiting for its replicas; nothing was written, \
                 retry with the same request_id"
            )));
        };
        self.admit(p, key, shared).await?;
        let mut conn = self.conns[p.index()].clone();
        let mut pipe = ::redis::pipe();
        pipe.invoke_script(invocation)
            .cmd("WAIT")
            .arg(self.wanted)
            .arg(WAIT_TIMEOUT.as_millis() as u64);
        let mut reply: std::result::Result<(T, u32), RedisError> =
            pipe.query_async(&mut conn).await;
        if reply.as_ref().is_err_and(redirected) {
            // redis-rs follows a MOVED for a single command, not for a
            // pipeline: one command on the key updates the connection's
            // map of slots (after a failover), and the pipeline, which the
            // node that refused it did not run, goes again.
            let _: std::result::Result<bool, RedisError> = conn.exists(key).await;
            reply = pipe.query_async(&mut conn).await;
        }
        let (value, replicas) = match reply {
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                invocation
                    .load_async(&mut conn)
                    .await
                    .map_err(redis_error)?;
                pipe.query_async(&mut conn).await.map_err(redis_error)?
            }
            reply => reply.map_err(redis_error)?,
        };
        if replicas < self.wanted {
            let mut gate = self.gates[p.index()].lock().expect("gate lock");
            gate.short = Some((replicas, Instant::now()));
            return Ok(Replicated::Short(value, replicas));
        }
        Ok(Replicated::Yes(value))
    }

    /// Lets a write of partition `p` go, or refuses it while the
    /// partition's master has too few replicas; one caller a second counts
    /// them again (on `shared`, through `key`).
    async fn admit(&self, p: Partition, key: &str, shared: &Conn) -> Result<()> {
        let gate = &self.gates[p.index()];
        {
            let mut state = gate.lock().expect("gate lock");
            match state.short {
                None => return Ok(()),
                Some((n, at)) if state.checking || at.elapsed() < RECHECK => {
                    return Err(self.refused(p, n));
                }
                Some(_) => state.checking = true,
            }
        }
        let counted: Result<u32> = ONLINE_REPLICAS
            .key(key)
            .invoke_async(&mut shared.clone())
            .await
            .map_err(redis_error);
        let mut state = gate.lock().expect("gate lock");
        state.checking = false;
        match counted {
            Ok(n) if n >= self.wanted => {
                state.short = None;
                Ok(())
            }
            Ok(n) => {
                state.short = Some((n, Instant::now()));
                Err(self.refused(p, n))
            }
            Err(err) => {
                let n = state.short.map_or(0, |(n, _)| n);
                state.short = Some((n, Instant::now()));
                Err(err)
            }
        }
    }

    fn refused(&self, p: Partition, replicas: u32) -> Error {
        Error::Unavailable(format!(
            "partition {p}'s Redis master has {replicas} of the {} online replicas \
             --redis-wait-replicas asks for: its writes are refused until one is back \
             (nothing was written; retry later with the same request_id)",
            self.wanted
        ))
    }

    /// The error of a write that reached `replicas` replicas only.
    pub(super) fn short_error(&self, replicas: u32, what: &str) -> Error {
        Error::Unavailable(format!(
            "{what} reached {replicas} of the {} replicas --redis-wait-replicas asks for within \
             {} ms: it is on the master and may be lost in a failover; retry with the same \
             request_id",
            self.wanted,
            WAIT_TIMEOUT.as_millis()
        ))
    }
}

/// Whether `err` sends the request to another node (MOVED, ASK): the
/// request was not run.
fn redirected(err: &RedisError) -> bool {
    let code = |code: &str| matches!(code, "MOVED" | "ASK");
    matches!(
        err.kind(),
        ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask)
    ) || err.code().is_some_and(code)
        || err
            .clone()
            .into_server_errors()
            .is_some_and(|errors| errors.iter().any(|(_, e)| code(e.code())))
}
