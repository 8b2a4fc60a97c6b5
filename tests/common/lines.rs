//! A running `cci` command whose output lines are gathered on threads as
//! they come (watchers: `cci events`, `cci status --watch`).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::cci;

/// A command's stdout and stderr lines, collected as they come; the
/// command is killed when this drops.
pub struct Lines {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
    pub errors: Arc<Mutex<Vec<String>>>,
}

fn gather(r: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let keep = lines.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            keep.lock().unwrap().push(l);
        }
    });
    lines
}

impl Lines {
    pub fn start(args: &[&str]) -> Lines {
        let mut child = cci()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = gather(child.stdout.take().unwrap());
        let errors = gather(child.stderr.take().unwrap());
        Lines {
            child,
            lines,
            errors,
        }
    }

    /// Waits (up to 30 s) for a stdout line `want` accepts; fails at once
    /// if the command ended.
    pub fn wait_for(&mut self, what: &str, want: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.lines.lock().unwrap().iter().any(|l| want(l)) {
            let ended = self.child.try_wait().unwrap();
            assert!(
                ended.is_none() && Instant::now() < deadline,
                "never printed {what} ({}): {:?} {:?}",
                ended.map_or("still running".into(), |s| s.to_string()),
                self.lines.lock().unwrap(),
                self.errors.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.errors.lock().unwrap().join("\n")
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
