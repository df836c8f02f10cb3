//! Test support: a private `redis-server` per test, on a free port with an empty
//! directory, killed on drop; it can be stopped and restarted to inject faults.
//! And a private Redis Cluster ([`RedisCluster`]) of such servers, joined with
//! `redis-cli --cluster create`.

use std::{
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use tempfile::TempDir;

/// Whether Redis tests are to be skipped (`HERALD_SKIP_REDIS_TESTS=1`).
pub fn skip_redis_tests() -> bool {
    std::env::var("HERALD_SKIP_REDIS_TESTS").is_ok_and(|v| v == "1")
}

/// A `redis-server` owned by one test.
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    append_only: bool,
    /// Runs as a Redis Cluster node (its bus on port + 10000).
    cluster: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server without persistence.
    pub fn start() -> Self {
        Self::spawn(false)
    }

    /// Starts a server with the append-only file on (`appendfsync always`), so
    /// a restart keeps every acknowledged write.
    pub fn start_with_aof() -> Self {
        Self::spawn(true)
    }

    fn spawn(append_only: bool) -> Self {
        Self::spawn_on(append_only, false, free_port)
    }

    fn spawn_on(append_only: bool, cluster: bool, port: impl Fn() -> u16) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for redis-server");
        let mut server = Self {
            port: 0,
            dir,
            append_only,
            cluster,
            child: None,
        };
        for _ in 0..5 {
            server.port = port();
            if server.try_start() {
                return server;
            }
        }
        panic!("redis-server did not start on a free port after 5 attempts");
    }

    fn try_start(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--daemonize", "no", "--protected-mode", "no"])
            .args(["--appendonly", if self.append_only { "yes" } else { "no" }])
            .args(["--appendfsync", "always"])
            .args(if self.cluster {
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                    // Replicas sync at once (by default a master waits 5 s
                    // for more replicas), so a test's failover finds them
                    // in sync.
                    "--repl-diskless-sync-delay",
                    "0",
                ][..]
            } else {
                &[][..]
            })
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed; the Redis tests need it \
                 (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis), \
                 or set HERALD_SKIP_REDIS_TESTS=1 to skip them"
            ),
            Err(e) => panic!("cannot run redis-server: {e}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // exited: most likely the port was taken meanwhile
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                self.child = Some(child);
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        false
    }

    /// The `redis://` URL of this server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server on the spot (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server gracefully (SIGTERM: the AOF is flushed) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.try_start() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster owned by one test: `masters` masters with `replicas`
/// replicas each, every node a [`RedisServer`] with cluster mode on, joined
/// by `redis-cli --cluster create`; killed on drop.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes, joins them and waits until the cluster serves every
    /// slot. A join that fails (a node's bus port, its port + 10000, taken
    /// meanwhile by another test's process, say) is tried again with fresh
    /// nodes, twice at most; the third failure panics with what
    /// `redis-cli` said.
    pub fn start(masters: usize, replicas: usize) -> Self {
        assert!(masters >= 3, "a Redis Cluster needs at least 3 masters");
        let mut attempt = 0;
        let cluster = loop {
            let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
                .map(|_| RedisServer::spawn_on(false, true, free_cluster_port))
                .collect();
            let cluster = Self { nodes };
            let out = Command::new("redis-cli")
                .arg("--cluster")
                .arg("create")
                .args(
                    cluster
                        .nodes
                        .iter()
                        .map(|n| format!("127.0.0.1:{}", n.port)),
                )
                .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
                .stdin(Stdio::null())
                .output()
                .expect("redis-cli (Debian: apt-get install redis-tools) to join the cluster");
            if out.status.success() {
                break cluster;
            }
            attempt += 1;
            assert!(
                attempt < 3,
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for node in &cluster.nodes {
            cluster.wait_until_ok(node.port);
        }
        for node in &cluster.nodes {
            cluster.wait_until_synced(node.port);
        }
        cluster
    }

    /// Waits until the node on `port`, if it is a replica, has synced with
    /// its master (only then can it take over from it).
    fn wait_until_synced(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let info = Command::new("redis-cli")
                .args(["-p", &port.to_string(), "info", "replication"])
                .output()
                .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
                .unwrap_or_default();
            if info.contains("role:master") || info.contains("master_link_status:up") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the replica on port {port} did not sync: {info}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the node on `port` says the cluster is ok (every slot
    /// served: after a master failed, once a replica took over).
    pub fn wait_until_ok(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.info(port).contains("cluster_state:ok") {
                return;
            }
            if Instant::now() >= deadline {
                let nodes = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "cluster", "nodes"])
                    .output()
                    .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
                    .unwrap_or_default();
                panic!("the cluster did not become ok on port {port}; its nodes:\n{nodes}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the node on `port` is a master now.
    pub fn is_master(&self, port: u16) -> bool {
        Command::new("redis-cli")
            .args(["-p", &port.to_string(), "role"])
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).starts_with("master"))
    }

    /// `CLUSTER INFO` as the node on `port` answers it (empty if it does not).
    pub fn info(&self, port: u16) -> String {
        Command::new("redis-cli")
            .args(["-p", &port.to_string(), "cluster", "info"])
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default()
    }

    /// The `redis://` URLs of every node, to use as seeds.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes, in the order they were started.
    pub fn nodes(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }
}

/// A port that was free a moment ago, with its cluster bus port (+10000)
/// free too: drawn from 20000 to 45535, below the ports the OS hands out on
/// its own, so that the bus port is at most 55535.
fn free_cluster_port() -> u16 {
    loop {
        let mut bytes = [0u8; 2];
        getrandom::fill(&mut bytes).expect("randomness from the OS");
        let port = 20_000 + u16::from_le_bytes(bytes) % 25_536;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

/// A port that is free now, for a server that stops and starts again on
/// it: drawn from 10000 to 19999, below the ports the OS hands out for
/// `:0` and those [`RedisCluster`] draws, so no other test's server takes
/// it while this one is down.
pub fn restartable_port() -> u16 {
    loop {
        let mut bytes = [0u8; 2];
        getrandom::fill(&mut bytes).expect("randomness from the OS");
        let port = 10_000 + u16::from_le_bytes(bytes) % 10_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}
