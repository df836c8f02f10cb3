//! Test support: a private `redis-server` per test, on a free port with an empty
//! directory, killed on drop; it can be stopped and restarted to inject faults.

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
        let dir = tempfile::tempdir().expect("temporary directory for redis-server");
        let mut server = Self {
            port: 0,
            dir,
            append_only,
            child: None,
        };
        for _ in 0..5 {
            server.port = free_port();
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
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
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
