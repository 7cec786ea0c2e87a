//! A loopback TCP proxy in front of the MySQL test server that can lose a COMMIT's acknowledgement:
//! once armed, it forwards the next `COMMIT` the client sends, waits for the server's answer, and then
//! closes the client's connection instead of passing the answer on. The server has committed; the
//! client sees a lost connection. It can do the same to the next prepared-statement execution.
//!
//! A COMMIT is either a text query (COM_QUERY "COMMIT") or, as `db::MysqlConn` sends it, the
//! execution (COM_STMT_EXECUTE) of the statement the server gave an id when the connection
//! prepared "COMMIT" (COM_STMT_PREPARE): the proxy reads that id from the server's answer.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
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

/// No statement id learnt yet.
const UNKNOWN: u32 = u32::MAX;

/// Client → server: parses MySQL packets (3-byte length, sequence id, payload) to see a COMMIT
/// (COM_QUERY "COMMIT", 0x03, or COM_STMT_EXECUTE, 0x17, of the prepared "COMMIT"). Server →
/// client: plain copying, stopped when a COMMIT's answer is to be lost, and reading the statement id
/// out of the answer to COM_STMT_PREPARE "COMMIT" (0x16). The client waits for each answer before it
/// sends its next command, so that answer starts the first chunk read after the prepare was sent.
fn relay(mut client: TcpStream, server: TcpStream, mode: Arc<AtomicU8>) {
    let swallow = Arc::new(AtomicU8::new(0));
    let commit_prepare_sent = Arc::new(AtomicU8::new(0));
    let commit_statement = Arc::new(AtomicU32::new(UNKNOWN));
    let (prepare_sent, statement) = (
        Arc::clone(&commit_prepare_sent),
        Arc::clone(&commit_statement),
    );
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
            // COM_STMT_PREPARE_OK: header, 0x00, the statement id (4 bytes, little-endian).
            if prepare_sent.swap(0, Ordering::SeqCst) == 1 && n >= 9 && buf[4] == 0x00 {
                let id = u32::from_le_bytes([buf[5], buf[6], buf[7], buf[8]]);
                statement.store(id, Ordering::SeqCst);
            }
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
        let is_text_commit =
            payload.first() == Some(&0x03) && payload[1..].eq_ignore_ascii_case(b"COMMIT");
        if payload.first() == Some(&0x16) && payload[1..].eq_ignore_ascii_case(b"COMMIT") {
            commit_prepare_sent.store(1, Ordering::SeqCst);
        }
        // COM_STMT_EXECUTE is 0x17, followed by the statement id.
        let is_execute = payload.first() == Some(&0x17);
        let executes = |id: u32| {
            id != UNKNOWN && is_execute && payload.len() >= 5 && payload[1..5] == id.to_le_bytes()
        };
        let is_commit = is_text_commit || executes(commit_statement.load(Ordering::SeqCst));
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
        if is_execute && !is_commit && armed == 3 {
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
