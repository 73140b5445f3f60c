//! What the tests of the `tern` binary share: `tern dev` started as a user starts it, on free
//! loopback ports with its own data directory, `tern admin` against it, and plain HTTP to its
//! metrics endpoint.

#![allow(dead_code)]

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

pub const TERN: &str = env!("CARGO_BIN_EXE_tern");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Dev {
    pub child: Child,
    pub server: String,
    pub http: String,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dev {
    pub fn start(data: &Path) -> Dev {
        Self::start_with(data, &[])
    }

    /// `tern dev` with extra arguments (a `--config` file, say). A free port can be taken by
    /// another test between the check and `tern dev`'s bind, which makes it exit: then it is
    /// started again on other ports, and what it said is shown if it never comes up.
    pub fn start_with(data: &Path, extra: &[&str]) -> Dev {
        let mut said = String::new();
        for _ in 0..3 {
            match Self::try_start(data, extra) {
                Ok(dev) => return dev,
                Err(stderr) => said = stderr,
            }
        }
        panic!("tern dev did not start; it said:\n{said}");
    }

    pub fn try_start(data: &Path, extra: &[&str]) -> Result<Dev, String> {
        let (grpc, http) = (free_port(), free_port());
        let log = std::env::temp_dir().join(format!("tern-cli-test-{grpc}.log"));
        let child = Command::new(TERN)
            .arg("dev")
            .args(extra)
            .args(["--grpc-listen", &format!("127.0.0.1:{grpc}"), "--http-listen", &format!("127.0.0.1:{http}")])
            .args(["--smtp-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--submission-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--submissions-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--pop3-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--pop3s-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--imap-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--imaps-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--managesieve-listen", &format!("127.0.0.1:{}", free_port())])
            .arg("--data-dir")
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("a log file for tern dev")))
            .spawn()
            .expect("tern dev starts");
        let mut dev = Dev { child, server: format!("http://127.0.0.1:{grpc}"), http: format!("127.0.0.1:{http}") };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err() {
            let exited = dev.child.try_wait().expect("wait for tern dev").is_some();
            if exited || Instant::now() >= deadline {
                let _ = dev.child.kill();
                let _ = dev.child.wait();
                let stderr = std::fs::read_to_string(&log).unwrap_or_default();
                let _ = std::fs::remove_file(&log);
                return Err(format!("(on port {grpc}, exited: {exited})\n{stderr}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The process keeps writing to the file it has open; only its name goes.
        let _ = std::fs::remove_file(&log);
        Ok(dev)
    }

    pub fn admin(&self, args: &[&str]) -> Output {
        Command::new(TERN).arg("admin").args(["--server", &self.server]).args(args).output().expect("tern admin runs")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.admin(args);
        assert!(out.status.success(), "tern admin {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.admin(args);
        assert!(!out.status.success(), "tern admin {args:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    }

    /// Stops the process with SIGTERM, as Kubernetes does, and waits for a clean exit.
    pub fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "tern dev exited with {status} on SIGTERM");
                return;
            }
            assert!(Instant::now() < deadline, "tern dev did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
