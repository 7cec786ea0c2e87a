//! A loopback TCP proxy in front of the MySQL test server that can lose a COMMIT's acknowledgement:
//! once armed, it forwards the next `COMMIT` the client sends, waits for the server's answer, and then
//! closes the client's connection instead of passing the answer on. The server has committed; the
//! client sees a lost connection. It can do the same to the next prepared-statement execution.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// What the proxy does with the next COMMIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OnCommit {
    /// Pass everything through.
    Forward = 0,
    /// Forward the COMMIT, swallow the server's answer and close the client connection.
    LoseAcknowledgement = 1,
    /// Close both connections instead of forwarding the COMMIT (the server rolls back).
    Drop = 2,
    /// Not about COMMIT: forward the next prepared-statement execution (an autocommit write), swallow
    /// the server's answer and close the client connection.
    LoseNextExecuteAcknowledgement = 3,
}

pub struct CommitProxy {
    port: u16,
    mode: Arc<AtomicU8>,
}

impl CommitProxy {
    /// Starts a proxy to `server_addr` (`host:port`) on a free loopback port. Its threads live until
    /// the test process ends.
    pub fn start(server_addr: &str) -> CommitProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(OnCommit::Forward as u8));
        let server_addr = server_addr.to_owned();
        let shared = Arc::clone(&mode);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&server_addr) else {
                    continue;
                };
                let mode = Arc::clone(&shared);
                std::thread::spawn(move || relay(client, server, mode));
            }
        });
        CommitProxy { port, mode }
    }

    /// Sets what happens to the next COMMIT; it applies once, then the proxy forwards again.
    pub fn arm(&self, on_commit: OnCommit) {
        self.mode.store(on_commit as u8, Ordering::SeqCst);
    }

    /// `mysql://user@127.0.0.1:PORT/database` for a server URL `mysql://user@host:port` and `database`.
    pub fn url(&self, server_url: &str, database: &str) -> String {
        let rest = server_url.strip_prefix("mysql://").unwrap();
        let user = rest.split('@').next().unwrap();
        format!(
            "mysql://{user}@127.0.0.1:{}/{database}?ssl_mode=disabled",
            self.port
        )
    }
}

/// Client → server: parses MySQL packets (3-byte length, sequence id, payload) to see COM_QUERY
/// "COMMIT" (0x03). Server → client: plain copying, stopped when a COMMIT's answer is to be lost.
fn relay(mut client: TcpStream, server: TcpStream, mode: Arc<AtomicU8>) {
    let swallow = Arc::new(AtomicU8::new(0));
    let (mut server_read, mut client_write) =
        (server.try_clone().unwrap(), client.try_clone().unwrap());
    let swallow_answer = Arc::clone(&swallow);
    let downstream = std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if swallow_answer.load(Ordering::SeqCst) == 1 {
                // The server answered the COMMIT: it has committed. The client never hears of it.
                let _ = client_write.shutdown(Shutdown::Both);
                let _ = server_read.shutdown(Shutdown::Both);
                break;
            }
            if client_write.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let mut server_write = server;
    loop {
        let mut header = [0u8; 4];
        if client.read_exact(&mut header).is_err() {
            break;
        }
        let len =
            usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
        let mut payload = vec![0u8; len];
        if client.read_exact(&mut payload).is_err() {
            break;
        }
        let is_commit =
            payload.first() == Some(&0x03) && payload[1..].eq_ignore_ascii_case(b"COMMIT");
        // COM_STMT_EXECUTE is 0x17.
        let is_execute = payload.first() == Some(&0x17);
        let armed = mode.load(Ordering::SeqCst);
        if is_commit && (armed == 1 || armed == 2) {
            mode.store(OnCommit::Forward as u8, Ordering::SeqCst);
            if armed == 1 {
                swallow.store(1, Ordering::SeqCst);
            } else {
                let _ = client.shutdown(Shutdown::Both);
                let _ = server_write.shutdown(Shutdown::Both);
                break;
            }
        }
        if is_execute && armed == 3 {
            mode.store(OnCommit::Forward as u8, Ordering::SeqCst);
            swallow.store(1, Ordering::SeqCst);
        }
        if server_write.write_all(&header).is_err() || server_write.write_all(&payload).is_err() {
            break;
        }
    }
    let _ = server_write.shutdown(Shutdown::Write);
    let _ = downstream.join();
}
