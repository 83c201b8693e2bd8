//! Real nodes for the tests that need the binary: `engram serve` (or
//! `worker`) as a child process on a free port, with a client of it.

use engram_client::Client;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to start (opening indexes, loading the model).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A node to start: `NodeBuilder::serve(env!("CARGO_BIN_EXE_engram"))`
/// (only the binary's own tests know that path).
pub struct NodeBuilder {
    bin: PathBuf,
    command: Vec<OsString>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    port: Option<u16>,
    stderr: Log,
    model: bool,
}

impl NodeBuilder {
    /// `engram serve --listen 127.0.0.1:<free port>`, with the real model
    /// folder ([`crate::model_dir`]).
    pub fn serve(bin: impl Into<PathBuf>) -> Self {
        NodeBuilder {
            bin: bin.into(),
            command: vec!["serve".into()],
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            port: None,
            stderr: Log::Discard,
            model: true,
        }
    }

    /// Another subcommand than `serve` (`worker`, say); `--listen` is not
    /// passed, so give the node's address in its arguments or environment.
    pub fn command(mut self, words: &[&str]) -> Self {
        self.command = words.iter().map(OsString::from).collect();
        self
    }

    pub fn data_dir(self, dir: &Path) -> Self {
        self.arg("--data-dir").arg(dir)
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn envs<K: Into<OsString>, V: Into<OsString>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Start the process and wait until it accepts connections, whatever
    /// its readiness (a node started with a back-end down).
    pub fn spawn_listening(self) -> Node {
        let mut n = self.spawn();
        n.wait_listening();
        n
    }

    /// Do not pass this variable on from the test's environment.
    pub fn env_remove(mut self, k: impl Into<OsString>) -> Self {
        self.env_remove.push(k.into());
        self
    }

    /// Authentication off: every request is the configured tenant's admin.
    pub fn no_auth(self) -> Self {
        self.env("ENGRAM_AUTH__ENABLED", "false")
    }

    /// Listen on this port instead of a free one (a restart on the same
    /// address).
    pub fn port(mut self, p: u16) -> Self {
        self.port = Some(p);
        self
    }

    /// Append the node's stderr (its log) to this file; default: discarded.
    pub fn log_to(mut self, file: &Path) -> Self {
        self.stderr = Log::File(file.to_path_buf());
        self
    }

    /// The node's log on the test's stderr.
    pub fn log_inherit(mut self) -> Self {
        self.stderr = Log::Inherit;
        self
    }

    /// Do not pass the model folder (a node with a remote embedder).
    pub fn without_model(mut self) -> Self {
        self.model = false;
        self
    }

    /// Start the process; [`Node::wait_ready`] waits for it to serve.
    pub fn spawn(self) -> Node {
        let port = self.port.unwrap_or_else(crate::free_port);
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.command);
        if self.command.first().is_some_and(|c| c == "serve") {
            cmd.arg("--listen").arg(format!("127.0.0.1:{port}"));
        }
        if self.model {
            cmd.env("ENGRAM_MODEL_DIR", crate::model_dir());
        }
        for k in &self.env_remove {
            cmd.env_remove(k);
        }
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        match &self.stderr {
            Log::File(f) => {
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(f)
                    .expect("opening the node's log");
                cmd.stderr(log);
            }
            Log::Inherit => {
                cmd.stderr(Stdio::inherit());
            }
            Log::Discard => {
                cmd.stderr(Stdio::null());
            }
        }
        let child = cmd.spawn().expect("starting engram");
        Node {
            child,
            port,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Start and wait until `/readyz` answers 200.
    pub async fn start(self) -> Node {
        let mut n = self.spawn();
        n.wait_ready().await;
        n
    }
}

enum Log {
    Discard,
    Inherit,
    File(PathBuf),
}

/// `engram keys create` on `data_dir` (the node may be running): a new
/// key of `role`, limited to `namespaces` if any; returns its token.
pub fn create_key(bin: &Path, data_dir: &Path, role: &str, namespaces: &[&str]) -> String {
    let mut cmd = Command::new(bin);
    cmd.args(["keys", "create", "--name", "test", "--role", role])
        .arg("--data-dir")
        .arg(data_dir)
        .env("ENGRAM_MODEL_DIR", crate::model_dir());
    for ns in namespaces {
        cmd.args(["--namespace", ns]);
    }
    let out = cmd.output().expect("running engram keys create");
    assert!(
        out.status.success(),
        "engram keys create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("keys create prints JSON");
    v["token"].as_str().expect("a token").to_string()
}

/// A running node; killed when dropped.
pub struct Node {
    child: Child,
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

impl Node {
    /// A client of this node sending `api_key`, retrying nothing (a test
    /// sees every answer as the server gave it).
    pub fn client(&self, api_key: Option<&str>) -> Client {
        Client::builder(&self.url)
            .api_key_opt(api_key)
            .retries(0)
            .timeout(Duration::from_secs(60))
            .build()
            .expect("a client of the node")
    }

    /// Wait until `/readyz` answers 200; panics if the process exits first
    /// or it takes longer than two minutes.
    pub async fn wait_ready(&mut self) {
        let c = self.client(None);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok((200, _)) = c.readiness().await {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("polling the node") {
                panic!("engram exited during start-up: {status}");
            }
            assert!(Instant::now() < deadline, "engram did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until the node accepts connections, whatever its readiness (a
    /// node started with a back-end down), from a synchronous test.
    pub fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.exited() {
                panic!("engram exited during start-up: {status}");
            }
            assert!(Instant::now() < deadline, "engram did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited (and how).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("polling the node")
    }

    /// SIGTERM and wait: a graceful shutdown (indexes persisted).
    pub fn stop(mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("waiting for the node")
    }

    /// [`Node::stop`], which must succeed (a graceful shutdown persists the
    /// indexes).
    pub fn stop_ok(self) {
        let status = self.stop();
        assert!(status.success(), "engram exited with {status}");
    }

    /// SIGKILL and wait: no shutdown hooks, no flushing.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
