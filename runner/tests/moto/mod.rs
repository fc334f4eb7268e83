//! A moto S3 server on 127.0.0.1 for the tests that need real S3 (storage, datasets).
//!
//! Needs `python3 -m pip install 'moto[server]'`; without it these tests fail (they never pass
//! silently).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pruneforge::storage::Storage;

pub const BUCKET: &str = "pruneforge-test";
const INSTALL_HINT: &str = "python3 -m pip install 'moto[server]'";

/// A moto S3 server child process; killed on drop.
pub struct MotoServer {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl MotoServer {
    pub fn start() -> Self {
        match Command::new("python3")
            .args(["-c", "import moto.server"])
            .output()
        {
            Err(e) => {
                panic!("cannot run python3 ({e}); install Python 3, then run: {INSTALL_HINT}")
            }
            Ok(out) if !out.status.success() => panic!(
                "moto is not installed (import moto.server failed: {}); run: {INSTALL_HINT}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Ok(_) => {}
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("moto.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto ({e}); run: {INSTALL_HINT}"));
        let mut server = MotoServer {
            child,
            port,
            log,
            _dir: dir,
        };
        server.wait_ready_and_create_bucket();
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_ready_and_create_bucket(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "moto exited early ({status}); log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            match self.request("PUT", &format!("/{BUCKET}")) {
                Ok(response) if response.starts_with("HTTP/1.1 200") => return,
                Ok(response) => panic!("creating bucket failed: {response}"),
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!(
                    "moto did not answer on port {} within 60 s ({e}); log:\n{}",
                    self.port,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ),
            }
        }
    }

    /// One raw HTTP/1.1 request without a body (moto does not check signatures by default).
    pub fn request(&self, method: &str, path: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    }

    /// The environment that points object_store's S3 client at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// Storage rooted at `s3://<bucket>/pf-test`.
    pub fn storage(&self) -> Storage {
        Storage::open_with_env(&format!("s3://{BUCKET}/pf-test"), self.env())
            .expect("open S3 storage")
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
